"""The single place that knows which TensorFlow, Horovod and blocksparse are installed.

Everything else imports ``tf`` from here and writes against ``tensorflow.compat.v1``, which exists from
TF 1.13 on, so the same code runs on the legacy stack (TF 1.13.1) and the primary one (TF 2.15.1).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def cpu_flags(path="/proc/cpuinfo"):
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except (IOError, OSError):
        pass
    return set()


def choose_onednn(environ=os.environ, flags=None):
    """Decide TF 2.x's oneDNN switch before TensorFlow loads; returns why, for the log.

    A TF_ENABLE_ONEDNN_OPTS the user set wins. Otherwise oneDNN is turned on wherever the CPU has AVX2: TF 2.15
    enables it by default only with AVX512_VNNI / AVX512_BF16 / AMX, and on AVX2-only CPUs it ran this model's
    step faster than Eigen. Without AVX2 (or without /proc/cpuinfo) TF's own default stays.
    """
    if "tensorflow" in sys.modules:
        return "decided by whoever imported TensorFlow before tf_mrc.compat"
    if ONEDNN_VARIABLE in environ:
        return "%s=%s from the environment" % (ONEDNN_VARIABLE, environ[ONEDNN_VARIABLE])
    flags = cpu_flags() if flags is None else flags
    if "avx2" not in flags:
        return "TF's default (the CPU reports no AVX2)"
    environ[ONEDNN_VARIABLE] = "1"
    shown = [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if flag in flags]
    return "%s=1 set by tf_mrc (CPU flags %s)" % (ONEDNN_VARIABLE, " ".join(shown))


_onednn_reason = choose_onednn()

import tensorflow as _tf  # noqa: E402

tf = _tf.compat.v1
TF_VERSION = tuple(int(p) for p in _tf.__version__.split(".")[:2])
IS_TF1 = TF_VERSION[0] == 1

# TF's deprecation notices and per-step INFO lines drown the progress log; TF_MRC_TF_LOGS=1 brings them back.
if os.environ.get("TF_MRC_TF_LOGS") != "1":
    tf.logging.set_verbosity(tf.logging.ERROR)
if not IS_TF1:
    tf.disable_v2_behavior()

estimator = tf.estimator


def cpu_kernels():
    """Which CPU kernel library TensorFlow runs, and why: one line for the run log."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # TF 2.x: reflects the runtime switch
        enabled = _pywrap_util_port.IsMklEnabled()
    except ImportError:  # TF 1.13: the pip wheel is built without oneDNN
        enabled = False
    if IS_TF1:
        return "Eigen (TF %d.%d has no oneDNN switch)" % TF_VERSION
    return "%s (%s)" % ("oneDNN" if enabled else "Eigen", _onednn_reason)

# The fused optimizer kernels (ApplyAdam, ApplyGradientDescent and their Resource* forms): this module path
# exists on TF 1.13 (re-exporting tensorflow.python.training.gen_training_ops) and on TF 2.x (re-exporting
# tensorflow.python.ops.gen_training_ops).
from tensorflow.python.training import training_ops  # noqa: E402


_blocksparse_error = None


def blocksparse_ops():
    """Return the blocksparse module, or raise a one-line error saying why it is unavailable."""
    global _blocksparse_error
    if _blocksparse_error is not None:
        raise RuntimeError(_blocksparse_error)
    if not IS_TF1:
        _blocksparse_error = ("--kernels=blocksparse needs TF 1.13 with CUDA 10.0 (blocksparse 1.13.1); "
                              "this is TF %d.%d: use --kernels=fused" % TF_VERSION)
        raise RuntimeError(_blocksparse_error)
    try:
        import blocksparse  # noqa: F401
        from blocksparse import ewops, softmax  # noqa: F401
        return blocksparse
    except Exception as err:  # NotFoundError when the CUDA 10 runtime is missing, ImportError when not installed
        _blocksparse_error = "--kernels=blocksparse is unavailable here (%s: %s); use --kernels=fused" % (
            type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        raise RuntimeError(_blocksparse_error)


def blocksparse_available():
    try:
        blocksparse_ops()
        return True
    except RuntimeError:
        return False


def gpu_visible():
    """Whether TensorFlow may run on a GPU here: CPU-only kernels must not pull a GPU graph onto the host. TF 2
    lists the GPUs without touching them; TF 1.13 can only list them by initializing every one (which takes
    memory on all of them, in every Horovod rank), so there a CUDA build counts as having one unless
    CUDA_VISIBLE_DEVICES hides them all."""
    if not tf.test.is_built_with_cuda():
        return False
    if IS_TF1:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() not in ("", "-1")
    return bool(_tf.config.list_physical_devices("GPU"))


def op_seeds():
    """(seed, seed2) for a new random op, derived from the graph seed as TF's own random ops derive theirs."""
    from tensorflow.python.framework import random_seed
    seed, seed2 = random_seed.get_seed(None)
    return (seed or 0), (seed2 or 0)


def native_build_flags():
    """g++ flags to build an op library against the installed TensorFlow: its headers, ABI and library. TF 1.13
    names no C++ standard, and its headers predate C++17 (the compiler's default now)."""
    compile_flags = list(tf.sysconfig.get_compile_flags())
    if not any(flag.lstrip("-").startswith("std=") for flag in compile_flags):
        compile_flags.append("-std=c++14")
    return compile_flags, list(tf.sysconfig.get_link_flags())
