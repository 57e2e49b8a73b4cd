"""Every task through the same run: train -> eval -> predict on small fixtures made from the shipped passages.

The tiny model trains and is scored on the same fixture, so it must beat guessing clearly; the margins are about
half of what two seeds (12345, 1) gained over guessing on a shared 2-core AMD EPYC: CJRC F1 34.6-37.2 against
15.6 for the best constant answer, C3 accuracy 86-93 and CHID 76-86 against 29 and 14 for a uniform pick.
"""
import json

import pytest

from conftest import c3_file, chid_file, cjrc_file
from tf_mrc import experiment
from tf_mrc.tasks import get_task


def best_constant_answer_f1(task, examples):
    """The F1 of the best single answer given to every question ("", "YES" or "NO")."""
    return max(task.evaluate(examples, {e.qid: answer for e in examples})["f1"] for answer in ("", "YES", "NO"))


def uniform_pick_accuracy(task, examples):
    """The expected accuracy of picking one of each question's choices at random."""
    return 100.0 * sum(1.0 / len(e.choices) for e in examples) / len(examples)


@pytest.mark.parametrize("task_name, make, max_len, metric, guess, margin", [
    ("cjrc", cjrc_file, 128, "f1", best_constant_answer_f1, 10.0),
    ("c3", c3_file, 128, "accuracy", uniform_pick_accuracy, 30.0),
    ("chid", chid_file, 64, "accuracy", uniform_pick_accuracy, 30.0),
])
def test_task_trains_evaluates_and_predicts(tmp_path, task_name, make, max_len, metric, guess, margin):
    data = make(tmp_path / ("%s.json" % task_name))
    spec = experiment.embedded_default(str(tmp_path / "out"))
    spec.task, spec.train_file, spec.dev_file = task_name, data, data
    spec.max_seq_length, spec.num_train_epochs, spec.log_every = max_len, 8.0, 1000
    results = experiment.run(spec)
    scores = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    task = get_task(task_name)
    baseline = guess(task, task.read_examples(data, False))
    assert scores == results[0] and scores["total"] > 0
    assert scores[metric] >= baseline + margin, (scores, baseline)
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text(encoding="utf-8"))
    assert len(predictions) == scores["total"]
