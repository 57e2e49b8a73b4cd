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
dropout         tf.nn.dropout, or the native op below.
Where tf_mrc.ops.native applies (float32 or bfloat16 on CPU, the library built), each op is instead one native
C++ op pair with the same arithmetic and the same saved tensors (dropout: a bit mask instead of a bool mask); the
composite spelling below is the portable form and the one the native ops are tested against.
fp16/bf16 inputs are computed in fp32 and returned in the input dtype; the tensor kept for backprop stays in
the input dtype, so this costs no saved memory, only short-lived fp32 copies inside one op. The GELU forms are
spelled so that x << 0 does not cancel where the dtype would show it (see ``gelu``; the errors of each spelling are
in the README's "Measured behind the code").

Only positional tensors go into the decorated functions (TF 1.13's graph-mode custom_gradient accepts no
keyword arguments), and they read no variables, so the TF 1.13 and TF 2.x decorators behave the same.
"""
import math

from tf_mrc.compat import tf
from tf_mrc.ops import native, reference
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
    inputs, and their full-size results then stay alive until backprop: the memory this module saves.
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
    """The erf form is spelled 0.5 x erfc(-x / sqrt 2), which does not cancel for x << 0. The tanh form is spelled
    x sigmoid(2u) for fp16 inputs (correctly rounded in fp16) and 0.5 x (1 + tanh u) for fp32 and bf16, whose
    1 + tanh cancellation for x << 0 stays below fp32 rounding of the result's magnitude and far below bf16's,
    and whose tanh kernel is the cheaper one on CPU."""
    if native.usable(x):
        with tf.name_scope("gelu_" + form):
            return native.gelu(x, form)
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
        bias = mask_bias(mask, compute)
        if native.usable(scores) and _broadcasts_per_dimension(bias, scores):
            return native.masked_softmax(scores, bias, scale)
        scale = tf.cast(scale, compute)

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


def _broadcasts_per_dimension(bias, scores):
    """Whether ``bias`` has the rank of the 4-D ``scores`` and each dimension 1 or equal (unknown passes: the
    native kernel checks at run time)."""
    if bias.shape.ndims != 4 or scores.shape.ndims != 4:
        return False
    return all(b is None or s is None or b in (1, s) for b, s in zip(bias.shape.as_list(), scores.shape.as_list()))


def dropped_attention(scores, mask, scale, rate, value):
    """dropout(masked_softmax(scores, mask, scale), rate) @ value. With the native ops its backward keeps the
    probabilities and the dropout's bit mask, not also the dropped probabilities (tf_mrc.ops.native)."""
    with tf.name_scope("attention"):
        bias = mask_bias(mask, tf.float32)
        if (native.usable(scores, value) and scores.dtype.base_dtype == value.dtype.base_dtype and
                _broadcasts_per_dimension(bias, scores)):
            return native.dropped_attention(scores, bias, scale, rate, value)
        return reference.dropped_attention(scores, mask, scale, rate, value, masked_softmax, dropout)


def dropout(x, rate):
    """tf.nn.dropout's semantics; the native op where it applies (its mask is a bit per element)."""
    if isinstance(rate, (int, float)) and rate == 0:
        return x
    if native.usable(x):
        with tf.name_scope("dropout"):
            return native.dropout(x, rate)
    return tf.nn.dropout(x, rate=rate)


def layer_norm(x, gamma, beta, epsilon, residual=None):
    """LayerNorm over the last axis of ``x`` (+ ``residual``), scaled by ``gamma``, shifted by ``beta`` (float32
    variables' values). fp16/bf16 inputs are computed (the residual added too) and returned in float32."""
    if native.usable(*[t for t in (x, residual, gamma, beta) if t is not None]) and (
            residual is None or residual.dtype.base_dtype == x.dtype.base_dtype):
        with tf.name_scope("layer_norm"):
            return native.layer_norm(x, gamma, beta, epsilon, residual)
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
