"""Shared test helpers: where the publishers' real samples live (../shared/data, beside the clone)."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("TF_MRC_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_file(relative):
    """Path of a real sample under ../shared/data; skips the test when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip("real sample %s not present" % path)
    return path


@pytest.fixture
def chinese_vocab():
    return str(shared_file("vocab/chinese_bert_vocab.txt"))
