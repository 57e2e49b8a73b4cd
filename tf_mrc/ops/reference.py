"""Plain-TF GELU, masked softmax, LayerNorm and dropout: the ground truth the other backends are tested against."""
import math

from tf_mrc.compat import tf

MASK_BIAS = -10000.0  # google BERT's additive mask value


def gelu(x, form):
    if form == "tanh":
        return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))
    if form == "erf":
        return 0.5 * x * (1.0 + tf.erf(x / math.sqrt(2.0)))
    return x * tf.sigmoid(1.702 * x)


def mask_bias(mask, dtype):
    """(1 - mask) * -10000 in ``dtype``; a [B, Tq|1, Tk] mask becomes [B, 1, Tq|1, Tk] to broadcast over heads."""
    mask = tf.cast(mask, dtype)
    if mask.shape.ndims == 3:
        mask = tf.expand_dims(mask, 1)
    return (1.0 - mask) * tf.cast(MASK_BIAS, dtype)


def masked_softmax(scores, mask, scale):
    logits = scores * tf.cast(scale, scores.dtype) + mask_bias(mask, scores.dtype)
    return tf.nn.softmax(logits)


def layer_norm(x, gamma, beta, epsilon, residual=None):
    """contrib's layer_norm arithmetic (moments + batch_normalization) over the last axis; fp16/bf16 in float32."""
    if residual is not None:
        x = x + residual
    if x.dtype in (tf.float16, tf.bfloat16):
        x = tf.cast(x, tf.float32)
    gamma, beta = tf.cast(gamma, x.dtype), tf.cast(beta, x.dtype)
    mean, variance = tf.nn.moments(x, [x.shape.ndims - 1], keep_dims=True)
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)


def dropout(x, rate):
    if isinstance(rate, (int, float)) and rate == 0:
        return x
    return tf.nn.dropout(x, rate=rate)


def dropped_attention(scores, mask, scale, rate, value, softmax=masked_softmax, drop=dropout):
    """drop(softmax(scores, mask, scale), rate) @ value, from a backend's own softmax and dropout (these by
    default): the composition every backend uses where it has nothing leaner."""
    return tf.matmul(drop(tf.cast(softmax(scores, mask, scale), value.dtype), rate), value)
