"""Every task through the same run: train -> eval -> predict on small fixtures made from the shipped passages, with
the BERT layout (``tiny``) and the XLNet layout (``tiny_xlnet``, from a config file in XLNet's key names, its
SentencePiece model trained by conftest).

The tiny models train and are scored on the same fixture, so they must beat guessing clearly; the BERT-layout
margins are about half of what two seeds (12345, 1) gained over guessing on a shared 2-core AMD EPYC: CJRC F1
34.6-37.2 against 15.6 for the best constant answer, C3 accuracy 86-93 and CHID 76-86 against 29 and 14 for a
uniform pick. tiny_xlnet must reach 60 on CMRC 2018 (F1) and C3 (accuracy), where guessing scores 0 and 29.
"""
import collections
import json

import pytest

from conftest import c3_file, chid_file, cjrc_file, write_xlnet_config
from tf_mrc import experiment
from tf_mrc.tasks import get_task
from tf_mrc.tokenization import load_tokenizer


def best_constant_answer_f1(task, examples):
    """The F1 of the best single answer given to every question ("", "YES" or "NO")."""
    return max(task.evaluate(examples, {e.qid: answer for e in examples})["f1"] for answer in ("", "YES", "NO"))


def uniform_pick_accuracy(task, examples):
    """The expected accuracy of picking one of each question's choices at random."""
    return 100.0 * sum(1.0 / len(e.choices) for e in examples) / len(examples)


def answers_are_passage_text(scores, examples, predictions):
    """Span labels and decoding agree on where the windows put the passage: every question gets a non-empty
    answer cut from its own passage."""
    assert scores["skipped"] == 0
    contexts = {e.qid: e.context for e in examples}
    assert set(predictions) == set(contexts)
    assert all(answer and answer in contexts[qid] for qid, answer in predictions.items())


def answers_are_choices(scores, examples, predictions):
    """Every question is answered with one of its own choices."""
    choices = {e.qid: e.choices for e in examples}
    assert set(predictions) == set(choices) and all(predictions[q] in choices[q] for q in choices)


Case = collections.namedtuple("Case", "task model make max_seq_length epochs metric guess margin check")

CASES = [
    Case("cjrc", "tiny", cjrc_file, 128, 8.0, "f1", best_constant_answer_f1, 10.0, None),
    Case("c3", "tiny", c3_file, 128, 8.0, "accuracy", uniform_pick_accuracy, 30.0, answers_are_choices),
    Case("chid", "tiny", chid_file, 64, 8.0, "accuracy", uniform_pick_accuracy, 30.0, None),
    # the shipped passages themselves (the embedded default's train and dev file)
    Case("cmrc2018", "tiny_xlnet", None, 128, 30.0, "f1", best_constant_answer_f1, 60.0, answers_are_passage_text),
    Case("c3", "tiny_xlnet", c3_file, 128, 6.0, "accuracy", uniform_pick_accuracy, 31.0, answers_are_choices),
]


@pytest.mark.parametrize("case", CASES, ids=["%s-%s" % (case.task, case.model) for case in CASES])
def test_task_trains_evaluates_and_predicts(tmp_path, request, case):
    spec = experiment.embedded_default(str(tmp_path / "out"))
    data = case.make(tmp_path / ("%s.json" % case.task)) if case.make else spec.dev_file
    spec.task, spec.train_file, spec.dev_file = case.task, data, data
    spec.max_seq_length, spec.num_train_epochs, spec.log_every = case.max_seq_length, case.epochs, 1000
    if case.model == "tiny_xlnet":
        spm_model = request.getfixturevalue("xlnet_spm_model")
        spec.model, spec.vocab_file, spec.spm_model = case.model, None, spm_model
        vocab_size = load_tokenizer("xlnet", spm_model=spm_model).vocab_size
        spec.config_file = write_xlnet_config(tmp_path / "xlnet_config.json", vocab_size)
    results = experiment.run(spec)
    scores = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    task = get_task(case.task)
    examples = task.read_examples(data, False)
    baseline = case.guess(task, examples)
    assert scores == results[0] and scores["total"] == len(examples) > 0
    assert scores[case.metric] >= baseline + case.margin, (scores, baseline)
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text(encoding="utf-8"))
    assert len(predictions) == scores["total"]
    if case.check:
        case.check(scores, examples, predictions)
