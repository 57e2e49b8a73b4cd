"""tf_mrc: fine-tune Chinese BERT-family encoders on Chinese machine reading comprehension."""
__version__ = "0.1.0"


def cache_dir(name):
    """``$TF_MRC_HOME/<name>`` (default ``~/.cache/tf_mrc/<name>``): where tf_mrc keeps what it builds once per
    machine (converted checkpoints, the native kernels)."""
    import os
    return os.path.join(os.environ.get("TF_MRC_HOME") or os.path.expanduser("~/.cache/tf_mrc"), name)
