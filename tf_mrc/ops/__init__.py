"""GELU and the attention softmax, each behind interchangeable backends.

Backends (``--kernels``):
  reference   plain TF ops; autodiff keeps every intermediate.
  fused       tf.custom_gradient versions whose backward pass keeps only what it needs
              (GELU keeps its input and recomputes; softmax keeps its output). Default.
  blocksparse OpenAI blocksparse kernels (TF 1.13 + CUDA 10 only).
  auto        blocksparse when it imports, else fused.

The encoders call only ``gelu`` and ``masked_softmax``; which backend runs is a graph-construction choice.
"""
from tf_mrc.ops import reference

BACKENDS = ("reference", "fused", "blocksparse", "auto")
GELU_FORMS = ("tanh", "erf", "sigmoid")


def resolve_backend(kernels):
    """Map a ``--kernels`` value to the backend module that will build the ops."""
    if kernels not in BACKENDS:
        raise ValueError("--kernels must be one of %s, got %r" % ("|".join(BACKENDS), kernels))
    if kernels == "reference":
        return reference
    try:
        from tf_mrc.ops import fused
    except ImportError:  # the fused backend lands with the kernels work; until then reference stands in
        fused = reference
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
