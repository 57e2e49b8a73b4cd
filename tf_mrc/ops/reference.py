"""Plain-TF GELU and masked softmax: the ground truth the other backends are tested against."""
import math

from tf_mrc.compat import tf


def gelu(x, form):
    if form == "tanh":
        return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))
    if form == "erf":
        return 0.5 * x * (1.0 + tf.erf(x / math.sqrt(2.0)))
    return x * tf.sigmoid(1.702 * x)


def masked_softmax(scores, mask, scale):
    mask = tf.cast(mask, scores.dtype)
    if mask.shape.ndims == 3:
        mask = tf.expand_dims(mask, 1)  # [B, 1, Tq|1, Tk] broadcasts over heads
    logits = scores * tf.cast(scale, scores.dtype) + (1.0 - mask) * tf.cast(-10000.0, scores.dtype)
    return tf.nn.softmax(logits)
