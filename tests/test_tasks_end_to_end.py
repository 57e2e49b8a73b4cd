"""Every task through the same run: train -> eval -> predict on small fixtures made from the shipped passages."""
import json

import pytest

from conftest import c3_file, chid_file, cjrc_file
from tf_mrc import experiment

@pytest.mark.parametrize("task, make, max_len, metric", [
    ("cjrc", cjrc_file, 128, "f1"),
    ("c3", c3_file, 128, "accuracy"),
    ("chid", chid_file, 64, "accuracy"),
])
def test_task_trains_evaluates_and_predicts(tmp_path, task, make, max_len, metric):
    data = make(tmp_path / ("%s.json" % task))
    spec = experiment.embedded_default(str(tmp_path / "out"))
    spec.task, spec.train_file, spec.dev_file = task, data, data
    spec.max_seq_length, spec.num_train_epochs, spec.log_every = max_len, 8.0, 1000
    results = experiment.run(spec)
    scores = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert scores == results[0] and 0.0 <= scores[metric] <= 100.0 and scores["total"] > 0
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text(encoding="utf-8"))
    assert len(predictions) == scores["total"]
