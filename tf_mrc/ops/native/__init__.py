"""tf_mrc's native CPU kernels (kernels.cc): the fused backend's GELU, masked softmax and LayerNorm (+ residual),
dropout with a bit mask, and AdamW, each one pass over memory forward and one backward, for float32 and (TF 2)
bfloat16 tensors.

The fused backend's composite ops (fused.py) chain stock elementwise kernels: a tanh GELU is eight passes over
[tokens, 3072] forward, a LayerNorm nine, dropout four. Here each is one C++ op with the same arithmetic, so the
non-matmul half of a training step shrinks, and dropout keeps a bit per element for backprop instead of a bool.

The library is compiled on first use on the machine that runs it (g++ against the installed TensorFlow's headers;
about 15 s) and cached under ``$TF_MRC_HOME/native/<key>/`` (default ``~/.cache/tf_mrc``), keyed by the source,
the TensorFlow and Python versions, the compiler and the CPU's flags (it is built with -march=native); a
concurrent build by another rank or process is harmless (each renames its own complete file into place). A build
that failed leaves its log there and is not tried again for the same key (delete the log to retry).
It is used only where it applies: float32 or bfloat16 tensors, no GPU visible (the kernels are CPU-only), the
fused backend, and ``TF_MRC_NATIVE_KERNELS`` not set to 0. Anywhere else, or if the build fails (the reason is
logged once), the composite ops run: the same results up to float rounding, as the tests check op by op.
"""
import contextlib
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

from tf_mrc import cache_dir
from tf_mrc.compat import IS_TF1, cpu_flags, gpu_visible, native_build_flags, op_seeds, tf

SWITCH = "TF_MRC_NATIVE_KERNELS"
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.cc")
_LIBRARY_NAME = "tf_mrc_kernels.so"
_BUILD_TIMEOUT_S = 600
# -fno-math-errno lets the compiler use the vector square root (the same correctly rounded result; only errno
# is never set), without which the AdamW loop stays scalar. No -ffast-math: the arithmetic is the composite's.
_OPTIMIZATION_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off"]

_lock = threading.Lock()
_state = {"off": 0}  # "library" (module or None), "status" (one line for the run log), "gpu", "off" (depth)


def _compiler_version(compiler):
    try:
        return subprocess.run([compiler, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=30).stdout.decode("utf-8", "replace").splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _build_key(compiler_version, compile_flags):
    digest = hashlib.sha256()
    with open(_SOURCE, "rb") as source:
        digest.update(source.read())
    for part in (tf.__version__, sys.version, platform.machine(), compiler_version,
                 " ".join(_OPTIMIZATION_FLAGS + compile_flags),
                 " ".join(sorted(cpu_flags()))):
        digest.update(b"\0" + str(part).encode("utf-8"))
    return digest.hexdigest()[:16]


def _build(path, compile_flags, link_flags, compiler):
    """Compile kernels.cc into ``path``: into a private temporary file first, renamed into place when complete."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=directory)
    os.close(handle)
    command = [compiler] + _OPTIMIZATION_FLAGS + ["-fPIC", "-shared", _SOURCE, "-o", partial] + compile_flags + link_flags
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=_BUILD_TIMEOUT_S)
        if result.returncode != 0:
            output = result.stdout.decode("utf-8", "replace")
            with open(os.path.join(directory, "build.log"), "w") as log:
                log.write(" ".join(command) + "\n" + output)
            errors = [line for line in output.splitlines() if "error" in line] or output.splitlines() or [""]
            raise RuntimeError("%s failed (%s; full log in %s)" % (
                compiler, errors[0].strip()[:200], os.path.join(directory, "build.log")))
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _load():
    if os.environ.get(SWITCH, "1") == "0":
        return None, "off (%s=0): the composite fused kernels run" % SWITCH
    compiler = os.environ.get("CXX") or "g++"
    compiler_version = _compiler_version(compiler)
    if compiler_version is None:
        return None, "unavailable (no C++ compiler %r): the composite fused kernels run" % compiler
    compile_flags, link_flags = native_build_flags()
    path = os.path.join(cache_dir("native"), _build_key(compiler_version, compile_flags), _LIBRARY_NAME)
    failed_log = os.path.join(os.path.dirname(path), "build.log")
    if not os.path.exists(path) and os.path.exists(failed_log):
        return None, ("unavailable (this build failed before, see %s; delete it to retry): the composite fused "
                      "kernels run" % failed_log)
    how = "cached"
    try:
        if not os.path.exists(path):
            started = time.time()
            _build(path, compile_flags, link_flags, compiler)
            how = "built in %.0f s" % (time.time() - started)
        library = tf.load_op_library(path)
    except (OSError, RuntimeError, subprocess.SubprocessError, tf.errors.OpError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return None, "unavailable (%s): the composite fused kernels run" % first_line
    _register_gradients(library)
    return library, "native C++ (%s, %s)" % (how, path)


def library():
    """The loaded op library, or None when it cannot or must not be used (``status()`` says why)."""
    with _lock:
        if "library" not in _state:
            _state["library"], _state["status"] = _load()
        return _state["library"]


def status():
    """One line for the run log: which form the fused kernels take here, and why."""
    library()
    if _state["library"] is not None and _on_gpu():
        return "composite (a GPU is visible; the native kernels are CPU-only)"
    return _state["status"]


def _on_gpu():
    if "gpu" not in _state:
        _state["gpu"] = gpu_visible()
    return _state["gpu"]


@contextlib.contextmanager
def off():
    """Graphs built inside this block use the composite forms (benches and tests compare the two)."""
    _state["off"] += 1
    try:
        yield
    finally:
        _state["off"] -= 1


def usable(*tensors):
    """Whether the native kernels apply to these tensors: all float32 or bfloat16 (TF 2), no GPU, the library
    loads."""
    types = (tf.float32,) if IS_TF1 else (tf.float32, tf.bfloat16)
    if _state["off"] or not all(t.dtype.base_dtype in types for t in tensors):
        return False
    return library() is not None and not _on_gpu()


# ------------------------------------------------------------------------------------------ the ops and their
# gradients. Each forward op returns what its gradient op needs; the gradient functions are registered once, when
# the library loads.

def gelu(x, form):
    return library().tf_mrc_gelu(x, form=form)


def masked_softmax(scores, bias, scale):
    """softmax(scores * scale + bias); scores [B, N, Tq, Tk], bias 4-D broadcastable to them (1 or equal per
    dimension)."""
    return library().tf_mrc_masked_softmax(scores, bias, tf.convert_to_tensor(scale, tf.float32))


def layer_norm(x, gamma, beta, epsilon, residual=None):
    """Returns float32 whatever x's type (as fused.layer_norm); x and residual must share a type."""
    inputs = [x, gamma, beta] if residual is None else [x, residual, gamma, beta]
    y, _, _ = library().tf_mrc_layer_norm(inputs, epsilon=epsilon)
    return y


def dropout(x, rate):
    """x / (1 - rate) where kept, else 0, with a fresh mask per step (seeded from the graph seed like
    tf.nn.dropout); ``rate`` a Python number or a float32 scalar tensor."""
    seed, seed2 = op_seeds()
    y, _ = library().tf_mrc_dropout(x, tf.convert_to_tensor(rate, tf.float32), seed=seed, seed2=seed2)
    return y


def global_norm(tensors):
    """sqrt(sum of squares of every element of every tensor), one op (all float32)."""
    return tf.sqrt(library().tf_mrc_sum_of_squares(tensors))


def updates_variable(var, grad):
    """Whether the native AdamW op applies to ``var`` and its gradient (the resource-variable form exists on TF 2
    only; see kernels.cc)."""
    if not usable(var, grad):
        return False
    return var.op.type != "VarHandleOp" or hasattr(library(), "tf_mrc_apply_adam_w")


def dropped_attention(scores, bias, scale, rate, value):
    """dropout(softmax(scores * scale + bias), rate) @ value, keeping for backprop only the probabilities, the bit
    mask and ``value``: the dropped probabilities (as large as the probabilities, [B, N, Tq, Tk]) are recomputed
    from those two in the backward pass instead of being kept, as autodiff of the matmul would keep them. Where
    the keys are a multiple of 64 (whole mask words per row), softmax and dropout are one op each way."""
    seed, seed2 = op_seeds()
    scale = tf.convert_to_tensor(scale, tf.float32)
    rate = tf.convert_to_tensor(rate, tf.float32)
    keys = scores.shape.as_list()[-1]
    one_op = keys is not None and keys % 64 == 0

    @tf.custom_gradient
    def attend(scores, value):
        if one_op:
            dropped, probs, mask = library().tf_mrc_masked_softmax_dropout(scores, bias, scale, rate, seed=seed,
                                                                           seed2=seed2)
        else:
            probs = library().tf_mrc_masked_softmax(scores, bias, scale)
            dropped, mask = library().tf_mrc_dropout(probs, rate, seed=seed, seed2=seed2)

        def gradients(dcontext):
            with tf.control_dependencies([dcontext]):  # recompute in the backward pass, not as soon as possible
                dropped_again = library().tf_mrc_dropout_grad(probs, mask, rate)  # probs x mask / (1 - rate)
            dvalue = tf.matmul(dropped_again, dcontext, transpose_a=True)
            ddropped = tf.matmul(dcontext, value, transpose_b=True)
            if one_op:
                return library().tf_mrc_masked_softmax_dropout_grad(ddropped, probs, mask, rate, scale), dvalue
            dprobs = library().tf_mrc_dropout_grad(ddropped, mask, rate)
            return library().tf_mrc_masked_softmax_grad(dprobs, probs, scale), dvalue

        return tf.matmul(dropped, value), gradients

    return attend(scores, value)


def apply_adamw(var, m, v, grad, lr, decay, grad_scale, beta1, beta2, epsilon, resource):
    """One op: var, m, v (all resource or all reference variables) updated by AdamW, the gradient multiplied by
    ``grad_scale`` (clipping) on the way."""
    if resource:
        return library().tf_mrc_apply_adam_w(var.handle, m.handle, v.handle, grad, lr, decay, grad_scale, beta1,
                                             beta2, epsilon)
    return library().tf_mrc_apply_adam_w_ref(var, m, v, grad, lr, decay, grad_scale, beta1, beta2, epsilon)


def _register_gradients(library):
    """Once per process: library() loads the library once."""
    @tf.RegisterGradient("TfMrcGelu")
    def _gelu_grad(op, dy):
        return library.tf_mrc_gelu_grad(dy, op.inputs[0], form=op.get_attr("form"))

    @tf.RegisterGradient("TfMrcMaskedSoftmax")
    def _softmax_grad(op, dprobs):
        return library.tf_mrc_masked_softmax_grad(dprobs, op.outputs[0], op.inputs[2]), None, None

    @tf.RegisterGradient("TfMrcLayerNorm")
    def _layer_norm_grad(op, dy, unused_dxhat, unused_drstd):
        gamma = op.inputs[-2]
        dx, dgamma, dbeta = library.tf_mrc_layer_norm_grad(dy, op.outputs[1], op.outputs[2], gamma,
                                                           T=op.inputs[0].dtype)
        return [dx, dx, dgamma, dbeta] if len(op.inputs) == 4 else [dx, dgamma, dbeta]

    @tf.RegisterGradient("TfMrcDropout")
    def _dropout_grad(op, dy, unused_dmask):
        return library.tf_mrc_dropout_grad(dy, op.outputs[1], op.inputs[1]), None

    tf.NotDifferentiable("TfMrcGeluGrad")
    tf.NotDifferentiable("TfMrcMaskedSoftmaxGrad")
    tf.NotDifferentiable("TfMrcLayerNormGrad")
    tf.NotDifferentiable("TfMrcDropoutGrad")
    tf.NotDifferentiable("TfMrcMaskedSoftmaxDropout")  # used only inside dropped_attention's custom gradient
    tf.NotDifferentiable("TfMrcMaskedSoftmaxDropoutGrad")
    tf.NotDifferentiable("TfMrcApplyAdamW")
    tf.NotDifferentiable("TfMrcSumOfSquares")
    tf.NotDifferentiable("TfMrcApplyAdamWRef")

