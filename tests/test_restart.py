"""A restart in an --output_dir is checked against the run stored there before anything is written."""
import json
import shutil

import pytest

from tf_mrc import restart
from tf_mrc.errors import UserError
from tf_mrc.experiment import RunSpec


def _stored_run(tmp_path, vocab_text="[PAD]\n[UNK]\n"):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(vocab_text, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    record = {"task": "cmrc2018", "model_config": {"hidden_size": 64, "vocab_size": 2}, "lower_case": None,
              "vocab_file": str(vocab), "spm_model": None, "feature_settings": {"max_seq_length": 128}}
    (out / restart.RUN_CONFIG).write_text(json.dumps(record), encoding="utf-8")
    return RunSpec(output_dir=str(out)), record


def test_the_same_model_may_restart_with_other_decoding_settings_and_a_moved_vocabulary(tmp_path):
    spec, record = _stored_run(tmp_path)
    moved = tmp_path / "elsewhere.txt"
    shutil.copy(record["vocab_file"], str(moved))
    restart.check_output_dir(spec, dict(record, vocab_file=str(moved), feature_settings={"max_seq_length": 64}))


@pytest.mark.parametrize("change, expected", [
    ({"task": "drcd"}, 'task "cmrc2018" (stored) vs "drcd"'),
    ({"model_config": {"hidden_size": 32, "vocab_size": 2}}, "model_config.hidden_size 64 (stored) vs 32"),
    ({"lower_case": False}, "lower_case null (stored) vs false"),
])
def test_another_model_is_one_line_saying_what_differs(tmp_path, change, expected):
    spec, record = _stored_run(tmp_path)
    before = (tmp_path / "out" / restart.RUN_CONFIG).read_bytes()
    with pytest.raises(UserError) as err:
        restart.check_output_dir(spec, dict(record, **change))
    assert "holds another run (%s)" % expected in str(err.value)
    assert (tmp_path / "out" / restart.RUN_CONFIG).read_bytes() == before


def test_a_vocabulary_with_other_content_differs(tmp_path):
    spec, record = _stored_run(tmp_path)
    other = tmp_path / "other.txt"
    other.write_text("[PAD]\n[CLS]\n", encoding="utf-8")
    with pytest.raises(UserError, match="vocab_file .*vocab.txt \\(stored\\) vs .*other.txt"):
        restart.check_output_dir(spec, dict(record, vocab_file=str(other)))


def _small_checkpoint(folder):
    """A checkpoint of 1,000 float32 weights (and Adam slots, which a checkpoint may carry: they do not count)."""
    from tf_mrc.compat import tf
    with tf.Graph().as_default():
        tf.get_variable("bert/w", [10, 100])
        tf.get_variable("bert/w/adam_m", [10, 100])
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            return tf.train.Saver().save(session, str(folder / "model.ckpt"))


@pytest.mark.parametrize("free, refused", [(11999, True), (12000, False)])
def test_training_needs_room_for_one_checkpoint_before_it_starts(tmp_path, monkeypatch, free, refused):
    """3 x the weights (weights + Adam's two slots) = 12,000 bytes here; the check reads the free space of
    --output_dir."""
    prefix = _small_checkpoint(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    usage = shutil.disk_usage(str(out))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free))
    spec = RunSpec(output_dir=str(out), init_checkpoint=prefix, do_train=True)
    if not refused:
        restart.check_free_space(spec)
        return
    with pytest.raises(UserError) as err:
        restart.check_free_space(spec)
    assert str(err.value) == ("--output_dir %s has 0 MB free, less than one checkpoint of this model needs (about "
                              "0 MB: the weights of %s and Adam's two slots): free space or pass another "
                              "--output_dir" % (out, prefix))


def test_a_full_disk_is_one_line_whichever_layer_reports_it(tmp_path):
    import errno
    from tf_mrc.compat import tf
    from tf_mrc.errors import out_of_space
    target = tmp_path / "run"
    target.mkdir()
    saved = str(target / "model.ckpt-0_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate79")
    tf_error = tf.errors.ResourceExhaustedError(None, None, "Graph execution error:\n\nDetected at node 'save/SaveV2'"
                                                " defined at (most recent call last):\n%s; No space left on device\n"
                                                "\t [[{{node save/SaveV2}}]]" % saved)
    os_error = OSError(errno.ENOSPC, "No space left on device", str(target / "predictions.json"))
    for err, path in ((tf_error, saved), (os_error, str(target / "predictions.json"))):
        message = str(out_of_space(err))
        assert message.startswith("no space left on the device writing %s (" % path) and "\n" not in message
    assert out_of_space(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")) is None
    assert out_of_space(OSError(errno.EACCES, "Permission denied", str(target))) is None


def test_training_on_a_full_device_ends_with_one_line(tmp_path):
    """End to end on a real full file system: a 3 MB tmpfs (needs mount rights; skipped without them)."""
    import subprocess
    import sys
    from tests.conftest import ROOT
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(full)], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        tiny = ROOT / "tf_mrc" / "resources" / "tiny"
        job = subprocess.run([sys.executable, str(ROOT / "run_finetune.py"), "--task=cmrc2018", "--model=tiny",
                              "--vocab_file=%s" % (tiny / "vocab.txt"), "--train_file=%s" % (tiny / "passages.json"),
                              "--do_train", "--num_train_epochs=2", "--output_dir=%s" % (full / "run")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    finally:
        subprocess.run(["umount", str(full)])
    assert job.returncode == 2, job.stderr[-2000:]
    assert "Traceback" not in job.stderr
    last = job.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device writing %s" % (full / "run")), last
