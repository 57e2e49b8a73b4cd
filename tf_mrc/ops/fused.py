"""GELU and masked softmax as tf.custom_gradient functions whose backward pass keeps only what it needs.

Autodiff of the reference formulas keeps the forward intermediates alive until backprop: for the tanh GELU
that is x, tanh(.), 1 + tanh(.) and 0.5 x, four [tokens, 3072] tensors per layer. Here:
  gelu            backward keeps only x and recomputes the derivative from it;
  masked_softmax  backward keeps only the output p: dx = scale * p * (dy - sum(dy * p, -1)); the mask gets no
                  gradient.
fp16/bf16 inputs are computed in fp32 and returned in the input dtype; the tensor kept for backprop stays in
the input dtype, so this costs no saved memory, only short-lived fp32 copies inside one op. GELU is written
without the 1 + tanh / 1 + erf cancellation for x << 0 (x sigmoid(2u), 0.5 x erfc(-x / sqrt 2)). Measured on
200k fp16 inputs x ~ N(0, 9) against float64 on TF 2.15, mean | max error in fp16 ulps of the result:
  reference formulas in fp16        tanh 63 | 2037   erf 68 | 2043   sigmoid 0.76 | 10.8
  reference formulas in fp32        tanh 0.37 | 11   erf 0.37 | 10     sigmoid 0.24 | 0.50
  these (fp32, no cancellation)     tanh 0.22 | 0.50 erf 0.22 | 0.50   sigmoid 0.24 | 0.50
(TF 1.13's CPU fp32 sigmoid is accurate to ~1e-7 absolute only: there the worst case grows to ~8 ulps on
tiny outputs, the mean stays 0.25-0.30.) In fp32, on 1536 x ~ N(0, 4), the tanh-GELU gradient's worst
|error| / (|exact| + 1e-3) is 8.5e-6 here and 3.3e-3 for autodiff of the reference formula.

Only positional tensors go into the decorated functions (TF 1.13's graph-mode custom_gradient accepts no
keyword arguments), and they read no variables, so the TF 1.13 and TF 2.x decorators behave the same.
"""
import math

from tf_mrc.compat import tf
from tf_mrc.ops.reference import mask_bias

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_CUBIC = 0.044715
_SIGMOID_SLOPE = 1.702


def _compute_dtype(dtype):
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _after(gradient, saved):
    """``saved``, readable only once ``gradient`` exists.

    Without this, backward ops that depend on forward tensors alone (the GELU derivative, scale * p, an fp32
    copy of fp16 probabilities) may be run by the executor as soon as the forward pass produces their
    inputs, and their full-size results then stay alive until backprop: the memory we set out to save.
    """
    with tf.control_dependencies([gradient]):
        return tf.identity(saved)


def _gelu_tanh(x):
    # 0.5 x (1 + tanh(u)) == x sigmoid(2u): the same function without 1 + tanh(u) cancelling for x << 0
    return x * tf.sigmoid(2.0 * _SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x))


def _gelu_tanh_derivative(x):
    # with s = sigmoid(2u): 0.5 (1 + tanh u) = s and 1 - tanh(u)^2 = 4 s (1 - s)
    s = tf.sigmoid(2.0 * _SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x))
    return s + 2.0 * _SQRT_2_OVER_PI * x * s * (1.0 - s) * (1.0 + 3.0 * _TANH_CUBIC * x * x)


def _gelu_erf(x):
    # 0.5 x (1 + erf(x / sqrt 2)) == 0.5 x erfc(-x / sqrt 2), which does not cancel for x << 0
    return 0.5 * x * tf.math.erfc(-x * _INV_SQRT_2)


def _gelu_erf_derivative(x):
    # d/dx x Phi(x) = Phi(x) + x phi(x)
    return 0.5 * tf.math.erfc(-x * _INV_SQRT_2) + x * _INV_SQRT_2PI * tf.exp(-0.5 * x * x)


def _gelu_sigmoid(x):
    return x * tf.sigmoid(_SIGMOID_SLOPE * x)


def _gelu_sigmoid_derivative(x):
    s = tf.sigmoid(_SIGMOID_SLOPE * x)
    return s * (1.0 + _SIGMOID_SLOPE * x * (1.0 - s))


_GELU = {
    "tanh": (_gelu_tanh, _gelu_tanh_derivative),
    "erf": (_gelu_erf, _gelu_erf_derivative),
    "sigmoid": (_gelu_sigmoid, _gelu_sigmoid_derivative),
}


def gelu(x, form):
    value_fn, derivative_fn = _GELU[form]
    compute = _compute_dtype(x.dtype)

    @tf.custom_gradient
    def lean_gelu(x):
        def backward(dy):
            x_now = _after(dy, x)
            return tf.cast(tf.cast(dy, compute) * derivative_fn(tf.cast(x_now, compute)), x.dtype)

        return tf.cast(value_fn(tf.cast(x, compute)), x.dtype), backward

    with tf.name_scope("gelu_" + form):
        return lean_gelu(x)


def masked_softmax(scores, mask, scale):
    compute = _compute_dtype(scores.dtype)
    with tf.name_scope("masked_softmax"):
        scale = tf.cast(scale, compute)
        bias = mask_bias(mask, compute)

        @tf.custom_gradient
        def lean_softmax(scores):
            probs = tf.cast(tf.nn.softmax(tf.cast(scores, compute) * scale + bias), scores.dtype)

            def backward(dprobs):
                p = tf.cast(_after(dprobs, probs), compute)
                dp = tf.cast(dprobs, compute)
                dlogits = p * (dp - tf.reduce_sum(dp * p, axis=-1, keepdims=True))
                return tf.cast(dlogits * scale, scores.dtype)

            return probs, backward

        return lean_softmax(scores)
