"""The single place that knows which TensorFlow, Horovod and blocksparse are installed.

Everything else imports ``tf`` from here and writes against ``tensorflow.compat.v1``, which exists from
TF 1.13 on, so the same code runs on the legacy stack (TF 1.13.1) and the primary one (TF 2.15.1).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
