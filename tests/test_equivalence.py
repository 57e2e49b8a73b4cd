"""bench/equivalence.py on the CMRC 2018 trial excerpt (tests/data): tf_mrc's training step and
transformers under google's optimizer arithmetic, from the same converted weights on the same batches, must
give the same loss curve; Adam's bias correction (transformers' own AdamW arithmetic) must not."""
import importlib.util
import os

import pytest

from conftest import ROOT, data_file

pytest.importorskip("torch")
pytest.importorskip("transformers")


def load_bench():
    spec = importlib.util.spec_from_file_location("equivalence", os.path.join(ROOT, "bench", "equivalence.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trajectory_matches_transformers(tmp_path):
    from tf_mrc.compat import IS_TF1
    bench = load_bench()
    figures = bench.main([
        "--train_file", data_file("cmrc2018/cmrc2018_trial.excerpt.json"),
        "--dev_file", data_file("cmrc2018/cmrc2018_trial.excerpt.json"), "--dev_questions", "20",
        "--vocab_file", data_file("vocab/chinese_bert_vocab.txt"), "--work_dir", str(tmp_path),
        "--model", "tiny", "--train_questions", "24", "--max_seq_length", "128", "--doc_stride", "64",
        "--trajectory_steps", "10", "--trajectory_batch_size", "4", "--learning_rate", "1e-3", "--seeds", "0",
        "--precision", "fp32" if IS_TF1 else "bf16"])
    assert figures["trajectory_max_rel_diff"] <= bench.TRAJECTORY_TARGET
    # the control: one change in the optimizer's arithmetic moves the curve far beyond the target
    assert figures["trajectory_control_max_rel_diff"] > 10 * bench.TRAJECTORY_TARGET
    if not IS_TF1:
        assert figures["bf16_trajectory_median_rel_diff"] <= bench.BF16_TOLERANCE
