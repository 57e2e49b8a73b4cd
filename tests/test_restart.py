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
