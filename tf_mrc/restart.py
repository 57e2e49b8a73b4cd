"""Restarting in an --output_dir: before a run writes anything, the directory must be writable and a run already
in it must be the same model (its run_config.json says); a run stopped by Ctrl-C or SIGTERM says where its last
checkpoint is, from which the same command resumes."""
import contextlib
import json
import os
import signal

import numpy as np

from tf_mrc import outputs
from tf_mrc.errors import UserError

RUN_CONFIG = "run_config.json"   # written by tf_mrc.experiment, read by export.to_pb


# What makes a stored run the same model: a restart that changes one of them cannot use its checkpoints.
# (Decoding and window settings, task options such as --metric, and kernels may change between runs.)
SAME_RUN_KEYS = ("task", "model_config", "lower_case")


def check_output_dir(spec, record):
    """Before anything is written: --output_dir (and --cache_dir) must be a writable directory, and a run already
    in it must be
    this run (same task, model config, vocabulary, casing) with readable checkpoints. Otherwise one line says
    what differs and nothing on disk changes (run_config.json stays the stored run's, so it can still be
    exported)."""
    from tf_mrc.compat import tf
    from tf_mrc.modeling.checkpoint import verify_readable
    out = spec.output_dir
    outputs.make_writable_directory(out, "--output_dir %s" % out)
    if spec.cache_dir:
        outputs.make_writable_directory(spec.cache_dir, "--cache_dir %s" % spec.cache_dir)
    stored_path = os.path.join(out, RUN_CONFIG)
    if os.path.exists(stored_path):
        try:
            with open(stored_path, encoding="utf-8") as f:
                stored = json.load(f)
            if not isinstance(stored, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            raise UserError("%s cannot be read (%s): move it away or pass a new --output_dir" % (stored_path, err))
        differences = _differences(stored, json.loads(json.dumps(record)), SAME_RUN_KEYS)
        differences += _vocabulary_differences(stored, record)
        if differences:
            raise UserError("--output_dir %s holds another run (%s): pass a new --output_dir, or the stored "
                            "run's settings to resume it" % (out, "; ".join(differences)))
    if spec.do_train:
        check_free_space(spec)
    for run_dir in [out] + [os.path.join(out, "seed_%d" % k) for k in range(spec.seeds)]:
        latest = tf.train.latest_checkpoint(run_dir) if os.path.isdir(run_dir) else None
        if latest:
            verify_readable(latest)


def check_free_space(spec):
    """Training from a checkpoint writes checkpoints of its weights and Adam's two slots (about 3x the weights):
    refuse a --output_dir without room for one before training starts, not when the first save fails."""
    import shutil
    from tf_mrc.compat import tf
    from tf_mrc.modeling.checkpoint import is_training_state, resolve_checkpoint
    prefix = resolve_checkpoint(spec.init_checkpoint)
    if not prefix or os.path.isdir(prefix):
        return
    try:
        weights = sum(4 * int(np.prod(shape)) for name, shape in tf.train.list_variables(prefix)
                      if not is_training_state(name))
    except (tf.errors.OpError, ValueError):
        return  # an unreadable --init_checkpoint gets its own error when it is restored
    need, free = 3 * weights, shutil.disk_usage(spec.output_dir).free
    if free < need:
        raise UserError("--output_dir %s has %.0f MB free, less than one checkpoint of this model needs (about "
                        "%.0f MB: the weights of %s and Adam's two slots): free space or pass another --output_dir"
                        % (spec.output_dir, free / 2.0 ** 20, need / 2.0 ** 20, prefix))


def _differences(stored, record, keys):
    """'key stored (stored) vs new' for each of ``keys`` that differs; dicts entry by entry."""
    found = []
    for key in keys:
        before, now = stored.get(key), record.get(key)
        if isinstance(before, dict) and isinstance(now, dict):
            found += ["%s.%s %s (stored) vs %s" % (key, name, json.dumps(before.get(name)), json.dumps(now.get(name)))
                      for name in sorted(set(before) | set(now)) if before.get(name) != now.get(name)]
        elif before != now:
            found.append("%s %s (stored) vs %s" % (key, json.dumps(before), json.dumps(now)))
    return found


def _vocabulary_differences(stored, record):
    from tf_mrc.tokenization import file_fingerprint
    differences = []
    for key in ("vocab_file", "spm_model"):
        before, now = stored.get(key), record[key]
        if before == now:
            continue
        if before and now and os.path.isfile(before) and os.path.isfile(now) and \
                file_fingerprint(before) == file_fingerprint(now):
            continue   # the same vocabulary under another path
        differences.append("%s %s (stored) vs %s" % (key, before, now))
    return differences


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: a scheduler sends it before SIGKILL, and the run
    stops the same way (the last checkpoint named, resumable), with the exit status of a SIGTERM death."""
    exit_status = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises Terminated; the previous handler comes back afterwards."""
    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruption_status(err):
    """The exit status of a run stopped by ``err`` (a KeyboardInterrupt): 130 for SIGINT, 143 for SIGTERM."""
    return getattr(err, "exit_status", 128 + signal.SIGINT)


def interruption_message(spec):
    """The line for a run stopped by Ctrl-C or SIGTERM: where its last checkpoint is and how to resume."""
    from tf_mrc.compat import tf
    run_dirs = [spec.output_dir] + [os.path.join(spec.output_dir, "seed_%d" % k) for k in range(spec.seeds)]
    latest = [tf.train.latest_checkpoint(d) for d in run_dirs if os.path.isdir(d)]
    latest = [checkpoint for checkpoint in latest if checkpoint]
    if not latest:
        return ("interrupted before the first checkpoint (none in %s): run the same command again to start over"
                % spec.output_dir)
    return ("interrupted: the last checkpoint is %s; run the same command again to resume from it"
            % latest[-1])
