"""Atomic outputs: a write that dies midway leaves the earlier file as it was and no temporary file behind."""
import json
import os

import pytest

from tf_mrc import outputs


def test_a_failed_write_keeps_the_earlier_file(tmp_path):
    path = tmp_path / "eval_results.json"
    outputs.write_json(str(path), {"f1": 1.0})
    with pytest.raises(KeyboardInterrupt):
        with outputs.atomic_open(str(path)) as f:
            f.write('{"f1": ')
            raise KeyboardInterrupt   # e.g. Ctrl-C in the middle of json.dump
    assert json.loads(path.read_text(encoding="utf-8")) == {"f1": 1.0}
    assert os.listdir(str(tmp_path)) == ["eval_results.json"]


def test_outputs_get_the_modes_open_would_give(tmp_path):
    """mkstemp makes its files 0600; an output must be readable as one written by open() is."""
    outputs.write_text(str(tmp_path / "results.md"), "| a |\n")
    outputs.write_bytes(str(tmp_path / "model.pb"), b"\x00\x01")
    outputs.copy_file(str(tmp_path / "model.pb"), str(tmp_path / "copy.pb"))
    mask = os.umask(0)
    os.umask(mask)
    for name in ("results.md", "model.pb", "copy.pb"):
        assert os.stat(str(tmp_path / name)).st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "copy.pb").read_bytes() == b"\x00\x01"
