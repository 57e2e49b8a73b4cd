"""GELU, masked softmax and LayerNorm (+ residual) as tf.custom_gradient functions whose backward pass keeps only
what it needs.

Autodiff of the reference formulas keeps the forward intermediates alive until backprop: for the tanh GELU
that is x, tanh(.), 1 + tanh(.) and 0.5 x, four [tokens, 3072] tensors per layer. Here:
  gelu            backward keeps only x and recomputes the derivative from it;
  masked_softmax  backward keeps only the output p: dx = scale * p * (dy - sum(dy * p, -1)); the mask gets no
                  gradient.
  layer_norm      LayerNorm(x [+ residual]) over the last axis in fp32; backward keeps only the normalized
                  input xhat (fp32) and 1 / std per row, and computes the three gradients in one expression each:
                  dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy gamma, dgamma = sum(dy xhat),
                  dbeta = sum(dy); the residual gets dx. Autodiff of moments + batch_normalization keeps x and
                  its moments and differentiates every intermediate op.
fp16/bf16 inputs are computed in fp32 and returned in the input dtype; the tensor kept for backprop stays in
the input dtype, so this costs no saved memory, only short-lived fp32 copies inside one op. For fp16 GELU is
written without the 1 + tanh / 1 + erf cancellation for x << 0 (x sigmoid(2u), 0.5 x erfc(-x / sqrt 2)). Measured on
200k fp16 inputs x ~ N(0, 9) against float64 on TF 2.15, mean | max error in fp16 ulps of the result:
  reference formulas in fp16        tanh 63 | 2037   erf 68 | 2043   sigmoid 0.76 | 10.8
  reference formulas in fp32        tanh 0.37 | 11   erf 0.37 | 10     sigmoid 0.24 | 0.50
  these (fp32, no cancellation)     tanh 0.22 | 0.50 erf 0.22 | 0.50   sigmoid 0.24 | 0.50
(TF 1.13's CPU fp32 sigmoid is accurate to ~1e-7 absolute only: there the worst case grows to ~8 ulps on
tiny outputs, the mean stays 0.25-0.30.) fp32 and bf16 inputs get the tanh spelling (tanh's CPU kernel costs about
half of sigmoid's): in fp32, on 1536 x ~ N(0, 4), the tanh-GELU gradient's worst |error| / (|exact| + 1e-3) is then
2.1e-3, as for autodiff of the reference formula (8.5e-6 with the sigmoid spelling).

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


def _gelu_tanh_sigmoid(x):
    # 0.5 x (1 + tanh(u)) == x sigmoid(2u): the same function without 1 + tanh(u) cancelling for x << 0
    return x * tf.sigmoid(2.0 * _SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x))


def _gelu_tanh_sigmoid_derivative(x):
    # with s = sigmoid(2u): 0.5 (1 + tanh u) = s and 1 - tanh(u)^2 = 4 s (1 - s)
    s = tf.sigmoid(2.0 * _SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x))
    return s + 2.0 * _SQRT_2_OVER_PI * x * s * (1.0 - s) * (1.0 + 3.0 * _TANH_CUBIC * x * x)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + tf.tanh(_SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x)))


def _gelu_tanh_derivative(x):
    t = tf.tanh(_SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * _SQRT_2_OVER_PI * x * (1.0 - t * t) * (1.0 + 3.0 * _TANH_CUBIC * x * x)


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
    """fp16 inputs get the tanh form's sigmoid spelling (correctly rounded in fp16); fp32 and bf16 the tanh
    spelling, whose 1 + tanh cancellation for x << 0 stays below fp32 rounding of the result's magnitude and
    far below bf16's, and whose tanh kernel costs about half of sigmoid's on CPU."""
    value_fn, derivative_fn = _GELU[form]
    if form == "tanh" and x.dtype == tf.float16:
        value_fn, derivative_fn = _gelu_tanh_sigmoid, _gelu_tanh_sigmoid_derivative
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


def layer_norm(x, gamma, beta, epsilon, residual=None):
    """LayerNorm over the last axis of ``x`` (+ ``residual``), scaled by ``gamma``, shifted by ``beta`` (float32
    variables' values). fp16/bf16 inputs are computed (the residual added too) and returned in float32."""
    compute = _compute_dtype(x.dtype)

    def forward(total, gamma, beta):
        mean = tf.reduce_mean(total, axis=-1, keepdims=True)
        centered = total - mean
        rstd = tf.rsqrt(tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True) + epsilon)
        normalized = centered * rstd
        rows = list(range(normalized.shape.ndims - 1))

        def backward(dy):
            xhat, inverse = _after(dy, normalized), _after(dy, rstd)
            g = dy * gamma
            dx = inverse * (g - tf.reduce_mean(g, axis=-1, keepdims=True) -
                            xhat * tf.reduce_mean(g * xhat, axis=-1, keepdims=True))
            return dx, tf.reduce_sum(dy * xhat, axis=rows), tf.reduce_sum(dy, axis=rows)

        return normalized * gamma + beta, backward

    with tf.name_scope("layer_norm"):
        gamma, beta = tf.cast(gamma, compute), tf.cast(beta, compute)
        if residual is None:
            @tf.custom_gradient
            def lean_layer_norm(x, gamma, beta):
                y, backward = forward(tf.cast(x, compute), gamma, beta)

                def gradients(dy):
                    dx, dgamma, dbeta = backward(dy)
                    return tf.cast(dx, x.dtype), dgamma, dbeta

                return y, gradients

            return lean_layer_norm(x, gamma, beta)

        @tf.custom_gradient
        def lean_residual_layer_norm(x, residual, gamma, beta):
            y, backward = forward(tf.cast(x, compute) + tf.cast(residual, compute), gamma, beta)

            def gradients(dy):
                dx, dgamma, dbeta = backward(dy)
                return tf.cast(dx, x.dtype), tf.cast(dx, residual.dtype), dgamma, dbeta

            return y, gradients

        return lean_residual_layer_norm(x, residual, gamma, beta)
