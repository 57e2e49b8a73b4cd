"""OpenAI blocksparse kernels behind the ops contract (TF 1.13 + CUDA 10.0 GPUs only).

Importing this module anywhere else raises compat.blocksparse_ops()'s one-line RuntimeError. The kernels
are registered for GPU only, so a graph placed on CPU fails when it runs. Their results are checked only
where they run: tests/test_ops.py compares this backend with NumPy when blocksparse imports and skips
otherwise, so on CPU-only machines this mapping is verified against blocksparse's source, not executed.

Mapping, from blocksparse 1.13.1's blocksparse/ewops.py, blocksparse/transformer.py and src/ew_op_gpu.h:
- GELU 'sigmoid': ``fast_gelu(x)`` is ``swish(x, alpha=1.702)``, whose kernel computes x * sigmoid(1.702 x),
  exactly our 'sigmoid' form. Its registered gradient (EwZXa, SWISH) reads only x, like the fused backend.
- LayerNorm: runs the fused backend (blocksparse's layer_norm normalizes per row too, but is not wired here).
- GELU 'tanh' and 'erf': run the fused backend. blocksparse's tanh-form op ``gelu`` carries its authors'
  warning "not numerically stable... Use fast_gelu for now", and there is no erf kernel. fast_gelu is the
  sigmoid form only: giving it a 'tanh' or 'erf' model would change a published checkpoint's activation.
- masked softmax: ``softmax(x, scale)`` = softmax(x * scale) over the last axis; its gradient
  (MaskedSoftmaxGrad) reads only the output and the kernels compute in fp32 for fp16/bf16 tensors.
  blocksparse's own ``mask`` input cannot carry padding masks: it is a float multiplier indexed with no
  stride over the leading (batch) axis ("m: 1, D1, D2, D3"). So the -10000 bias is added to the scores
  before the kernel: masked logits become (s - 10000) * scale instead of s * scale - 10000. Both underflow exp() to
  exactly 0 in fp32 and fp16 unless a row's unmasked logits
  spread by over 10000 * scale (1250 at head size 64), so the probabilities are the same; pre-dividing
  the bias by scale instead would overflow fp16 (-10000 / 0.125 = -80000). In fp16, s - 10000 rounds to a
  multiple of 8, which changes only rows whose every key is masked (outputs BERT never uses).
"""
import functools

from tf_mrc.compat import blocksparse_ops, tf
from tf_mrc.ops import fused, reference
from tf_mrc.ops.reference import mask_bias

_blocksparse = blocksparse_ops()


def gelu(x, form):
    if form == "sigmoid":
        return _blocksparse.fast_gelu(x)
    return fused.gelu(x, form)


layer_norm = fused.layer_norm
dropout = fused.dropout


def masked_softmax(scores, mask, scale):
    if not isinstance(scale, tf.Tensor):
        scale = float(scale)  # blocksparse caches Python floats as constants and rejects NumPy scalars
    else:
        scale = tf.cast(scale, tf.float32)
    return _blocksparse.softmax(scores + mask_bias(mask, scores.dtype), scale)


dropped_attention = functools.partial(reference.dropped_attention, softmax=masked_softmax, drop=dropout)
