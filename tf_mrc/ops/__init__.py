"""GELU, the attention softmax, LayerNorm (+ residual) and dropout, each behind interchangeable backends.

Backends (``--kernels``):
  reference   plain TF ops; autodiff keeps every intermediate.
  fused       tf.custom_gradient versions whose backward pass keeps only what it needs
              (GELU keeps its input and recomputes; softmax keeps its output); fp16/bf16 computed in fp32.
              Default. In float32 and bfloat16 on CPU these run as native C++ ops (tf_mrc.ops.native: one
              pass forward and one backward each, dropout with a bit mask), compiled on first use; elsewhere
              as TF composites.
  blocksparse OpenAI blocksparse GPU kernels (TF 1.13 + CUDA 10 only): softmax and the sigmoid GELU;
              the tanh and erf GELU forms run fused (see blocksparse_backend).
  auto        blocksparse when it imports, else fused.

The encoders call only ``gelu``, ``masked_softmax``, ``layer_norm``, ``dropout`` and ``attention_dropout``; which
backend runs is a graph-construction choice.
"""
from tf_mrc.compat import tf
from tf_mrc.ops import fused, reference

BACKENDS = ("reference", "fused", "blocksparse", "auto")
GELU_FORMS = ("tanh", "erf", "sigmoid")
ATTENTION_DROPOUT_SITES = ("probs", "context")


def resolve_backend(kernels):
    """Map a ``--kernels`` value to the backend module that will build the ops."""
    if kernels not in BACKENDS:
        raise ValueError("--kernels must be one of %s, got %r" % ("|".join(BACKENDS), kernels))
    if kernels == "reference":
        return reference
    if kernels == "fused":
        return fused
    from tf_mrc.compat import blocksparse_available
    if kernels == "auto":
        if blocksparse_available():
            from tf_mrc.ops import blocksparse_backend
            return blocksparse_backend
        return fused
    from tf_mrc.compat import blocksparse_ops
    blocksparse_ops()  # raises a one-line error when unavailable
    from tf_mrc.ops import blocksparse_backend
    return blocksparse_backend


def gelu(x, form="tanh", kernels="fused"):
    """GELU of ``x``. ``form``: 'tanh' (google BERT's 'gelu'), 'erf' (exact), 'sigmoid' (x * sigmoid(1.702 x))."""
    if form not in GELU_FORMS:
        raise ValueError("GELU form must be one of %s, got %r" % ("|".join(GELU_FORMS), form))
    return resolve_backend(kernels).gelu(x, form)


def masked_softmax(scores, mask, scale, kernels="fused"):
    """softmax(scores * scale + (1 - mask) * -10000) over the last axis.

    scores: [B, N, Tq, Tk] float; mask: [B, 1 or Tq, Tk] (or broadcastable to scores) with 1 = attend.
    The -10000 additive mask is BERT's, so results match the published models bit for bit in fp32.
    Returns probabilities in the dtype of ``scores``.
    """
    return resolve_backend(kernels).masked_softmax(scores, mask, scale)


def layer_norm(x, gamma, beta, epsilon, residual=None, kernels="fused"):
    """LayerNorm over the last axis of x (+ residual) with gamma, beta; fp16/bf16 computed and returned in fp32."""
    return resolve_backend(kernels).layer_norm(x, gamma, beta, epsilon, residual)


def dropout(x, rate, kernels="fused"):
    """tf.nn.dropout(x, rate) (identity at rate 0) as the backend implements it."""
    return resolve_backend(kernels).dropout(x, rate)


def dropped_attention(scores, mask, scale, rate, value, kernels="fused"):
    """dropout(masked_softmax(scores, mask, scale), rate) @ value (value [B, N, Tk, D]): attention-probability
    dropout (BERT's placement) and the matmul that follows, as one unit, so that a backend can keep less for
    backprop (the fused one keeps the probabilities and a bit mask, not the dropped probabilities)."""
    return resolve_backend(kernels).dropped_attention(scores, mask, scale, rate, value)


def attention_dropout(x, rate, site, placement="probs", dropout_fn=None):
    """Dropout at one site of the attention block; a no-op unless ``site`` is where ``placement`` puts it.

    The encoder calls this twice per layer with the same ``placement`` (default 'probs'):
      site='probs'    on the [B, N, Tq, Tk] probabilities, before they multiply V: google BERT's place, the
                      semantics every published checkpoint was trained with;
      site='context'  on the merged [B, Tq, H] context after the heads are concatenated: the dropout keep-mask
                      kept for backprop is then H / (N * Tk) the size (1/8 at T = 512, H = 768, N = 12). A
                      different regulariser, hence opt-in.
    ``rate``: drop probability, a Python number (0 when not training) or a scalar tensor.
    ``dropout_fn(x, rate)``: the dropout to apply, default tf.nn.dropout; a recomputed layer passes a seeded one
    so that its backward pass regenerates the forward pass's mask.
    """
    if site not in ATTENTION_DROPOUT_SITES:
        raise ValueError("attention dropout site must be one of %s, got %r" % ("|".join(ATTENTION_DROPOUT_SITES), site))
    if site != placement or (isinstance(rate, (int, float)) and rate == 0):
        return x
    if dropout_fn is None:
        return tf.nn.dropout(x, rate=rate)
    return dropout_fn(x, rate)
