"""C3: reading the d/m files, longest-first truncation, choice padding and accuracy.

References: hand-written fixtures with hand-computed token ids, the token-by-token truncation loop of BERT's
multiple-choice baselines, and dev files in the published layout (tests/data/c3)."""
import json
import random

import numpy as np
import pytest

from conftest import SPECIAL_TOKENS, char_tokenizer, data_file
from tf_mrc.errors import UserError
from tf_mrc.tasks import DataError, FeatureSettings, get_task
from tf_mrc.tasks.c3 import subset_files
from tf_mrc.tasks.choice import truncate_longest_first
from tf_mrc.tokenization import WordPieceTokenizer

SPECIAL = SPECIAL_TOKENS
CHARS = "甲乙丙丁戊己一二三四五六"
ID = {ch: len(SPECIAL) + i for i, ch in enumerate(CHARS)}
PAD, UNK, CLS, SEP = range(4)


@pytest.fixture
def tokenizer(tmp_path):
    return char_tokenizer(tmp_path, CHARS)


def ids(text):
    return [ID[ch] for ch in text]


def write_json(path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


DIALOGUE = [[["甲乙丙", "丁戊己"], [{"question": "一二", "choice": ["三", "四五六"], "answer": "四五六"},
                                  {"question": "二", "choice": ["一", "二", "三", "四"], "answer": "一"}], "1-1"]]
MIXED = [[["甲乙"], [{"question": "三", "choice": ["五", "六", "四"], "answer": "六"}], "1-1"]]


# -- reading ------------------------------------------------------------------------------------------------
def test_reads_both_subsets_with_ids_kept_apart(tmp_path):
    write_json(tmp_path / "c3-d-dev.json", DIALOGUE)
    write_json(tmp_path / "c3-m-dev.json", MIXED)
    examples = get_task("c3").read_examples(str(tmp_path / "c3-m-dev.json"), False)   # d and m by default
    assert [(e.qid, e.label, e.question, e.choices) for e in examples] == [
        ("d-1-1-0", 1, "一二", ["三", "四五六"]), ("d-1-1-1", 0, "二", ["一", "二", "三", "四"]),
        ("m-1-1-0", 1, "三", ["五", "六", "四"])]
    assert examples[0].passage == "甲乙丙\n丁戊己"
    only_m = get_task("c3", {"c3_subsets": "m"}).read_examples(str(tmp_path / "c3-d-dev.json"), True)
    assert [e.qid for e in only_m] == ["m-1-1-0"]


def test_subset_files():
    assert subset_files("/x/c3-d-dev.json", ["d", "m"]) == [("/x/c3-d-dev.json", "d"), ("/x/c3-m-dev.json", "m")]
    assert subset_files("/x/m-train.json", ["d"]) == [("/x/d-train.json", "d")]           # CLUE's names
    assert subset_files("/x/c3-m-train.sample.json", ["m"]) == [("/x/c3-m-train.sample.json", "m")]
    assert subset_files("/d-dev/test1.1.json", ["d", "m"]) == [("/d-dev/test1.1.json", "")]


def test_source_files_are_every_subset_read():
    assert get_task("c3").source_files("/x/c3-d-dev.json") == ["/x/c3-d-dev.json", "/x/c3-m-dev.json"]
    assert get_task("c3", {"c3_subsets": "m"}).source_files("/x/c3-d-dev.json") == ["/x/c3-m-dev.json"]


def test_missing_subset_file_names_the_option(tmp_path):
    write_json(tmp_path / "c3-d-dev.json", DIALOGUE)
    with pytest.raises(DataError, match=r"c3-m-dev\.json: record -: field '-': file not found \(c3-d-dev\.json "
                                        r"stands for the files of c3_subsets=d,m\)"):
        get_task("c3").read_examples(str(tmp_path / "c3-d-dev.json"), False)


def test_a_file_named_to_evaluate_or_audit_is_that_file_alone(tmp_path, capsys):
    from tf_mrc import evaluate
    from tf_mrc.tasks import task_for_file
    write_json(tmp_path / "c3-d-dev.json", DIALOGUE)
    write_json(tmp_path / "c3-m-dev.json", MIXED)
    alone = task_for_file("c3", {}, str(tmp_path / "c3-m-dev.json")).read_examples(str(tmp_path / "c3-m-dev.json"),
                                                                                 False)
    assert [e.qid for e in alone] == ["m-1-1-0"]     # the id a d,m run predicts for it
    both = task_for_file("c3", {"c3_subsets": "d,m"}, str(tmp_path / "c3-m-dev.json"))
    assert len(both.read_examples(str(tmp_path / "c3-m-dev.json"), False)) == 3
    # a d,m run's predictions scored on the m file: its one question, right
    predictions = write_json(tmp_path / "predictions.json", {"d-1-1-0": "三", "d-1-1-1": "一", "m-1-1-0": "六"})
    evaluate.main(["--task=c3", str(tmp_path / "c3-m-dev.json"), predictions])
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"accuracy": 100.0, "total": 1}


def test_single_file_and_question_ids(tmp_path):
    path = write_json(tmp_path / "m-train.json", MIXED)
    assert [e.qid for e in get_task("c3", {"c3_subsets": "m"}).read_examples(path, True)] == ["m-1-1-0"]
    # CLUE's test files give each question an id and no answer.
    test = [[["甲乙"], [{"question": "三", "choice": ["五", "六"], "id": 17},
                        {"question": "四", "choice": ["五", "六"], "id": 18}], "x"]]
    examples = get_task("c3").read_examples(write_json(tmp_path / "test1.1.json", test), False)
    assert [(e.qid, e.label) for e in examples] == [("17", -1), ("18", -1)]


def test_bad_subset_option():
    with pytest.raises(UserError, match="c3_subsets"):
        get_task("c3", {"c3_subsets": "d,x"})


def question(**fields):
    return dict({"question": "一", "choice": ["二", "三"], "answer": "二"}, **fields)


@pytest.mark.parametrize("data, record, field", [
    ({"not": "a list"}, "-", "-"),
    ([["甲", [question()]]], "1", "-"),
    ([[["甲", 3], [question()], "7"]], "1 (id 7)", "context"),
    ([[["甲"], [], "7"]], "1 (id 7)", "questions"),
    ([[["甲"], [question(), {"choice": ["二", "三"], "answer": "二"}], "7"]], "1 (id 7)", "questions[1].question"),
    ([[["甲"], [question(choice=["二", "三", "四", "五", "六"])], "7"]], "1 (id 7)", "questions[0].choice"),
    ([[["甲"], [question(choice=["二"])], "7"]], "1 (id 7)", "questions[0].choice"),
    ([[["甲"], [question(answer="四")], "7"]], "1 (id 7)", "questions[0].answer"),
    ([[["甲"], [{"question": "一", "choice": ["二", "三"]}], "7"]], "1 (id 7)", "questions[0].answer"),
    ([[["甲"], [question(id=1)], "7"], [["乙"], [question(id="1")], "8"]], "2 (id 8)", "questions[0].id"),
    ([[["甲"], [question(id=None)], "7"]], "1 (id 7)", "questions[0].id"),
    ([[[" \u200b", "\ufeff"], [question()], "7"]], "1 (id 7)", "context"),
])
def test_malformed_records_name_file_record_and_field(tmp_path, data, record, field):
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(DataError) as err:
        get_task("c3").read_examples(path, True)
    assert str(err.value).startswith("%s: record %s: field %r: " % (path, record, field))


def test_answer_not_among_choices_names_it(tmp_path):
    path = write_json(tmp_path / "bad.json", [[["甲"], [question(answer="四")], "7"]])
    with pytest.raises(DataError, match=r"'四' is not among the choices \['二', '三'\]"):
        get_task("c3").read_examples(path, False)


# -- truncation and featurization ----------------------------------------------------------------------------
def pop_longest(lengths, budget):
    """The baselines' loop: drop the last token of the longest part (the earlier one on ties) until it fits."""
    lengths = list(lengths)
    while sum(lengths) > budget:
        lengths[lengths.index(max(lengths))] -= 1
    return lengths


def test_truncate_longest_first_matches_the_token_by_token_loop():
    assert truncate_longest_first([5, 5, 2], 9) == [3, 4, 2]      # ties: the earlier part loses first
    assert truncate_longest_first([6, 2, 3], 8) == [3, 2, 3]
    assert truncate_longest_first([3, 2, 1], 8) == [3, 2, 1]
    rng = random.Random(0)
    for _ in range(2000):
        lengths = [rng.randrange(0, 40) for _ in range(rng.randrange(1, 5))]
        budget = rng.randrange(0, 100)
        assert truncate_longest_first(lengths, budget) == pop_longest(lengths, budget), (lengths, budget)


def test_featurization_by_hand(tmp_path, tokenizer):
    task = get_task("c3", {"c3_subsets": "d"})
    examples = task.read_examples(write_json(tmp_path / "c3-d-dev.json", DIALOGUE), False)
    featurized = task.featurize(examples[:1], tokenizer, FeatureSettings(max_seq_length=12), False)
    arrays = featurized.arrays[0]
    # 12 - 4 specials = 8 tokens for passage (6) + question (2) + choice.
    # Choice "三": 9 tokens, the passage (longest) loses one. Choice "四五六": 11, the passage loses three.
    assert arrays["input_ids"][0] == [CLS] + ids("甲乙丙丁戊") + [SEP] + ids("一二") + [SEP] + ids("三") + [SEP]
    assert arrays["input_ids"][1] == [CLS] + ids("甲乙丙") + [SEP] + ids("一二") + [SEP] + ids("四五六") + [SEP]
    assert arrays["segment_ids"][1] == [0] * 5 + [1] * 7
    assert arrays["input_mask"][1] == [1] * 12
    # Two real choices of four: the padding copies the first sequence and is masked out.
    assert arrays["choice_mask"] == [1, 1, 0, 0]
    assert arrays["input_ids"][2] == arrays["input_ids"][3] == arrays["input_ids"][0]
    assert arrays["label"] == 1 and arrays["example_index"] == 0
    assert featurized.stats == {"examples": 1, "features": 1, "truncated": 1}
    for name, shape in task.feature_shapes(FeatureSettings(max_seq_length=12)).items():
        assert np.asarray(arrays[name]).shape == tuple(shape)
    # Room enough: nothing cut, short sequences padded.
    roomy = task.featurize(examples, tokenizer, FeatureSettings(max_seq_length=16), False)
    assert roomy.stats["truncated"] == 0
    assert roomy.arrays[1]["input_ids"][0] == (
        [CLS] + ids("甲乙丙丁戊己") + [SEP] + ids("二") + [SEP] + ids("一") + [SEP] + [PAD] * 4)
    assert roomy.arrays[1]["choice_mask"] == [1, 1, 1, 1]


# -- decoding and scoring ------------------------------------------------------------------------------------
def test_masked_choices_never_chosen_and_accuracy(tmp_path, tokenizer):
    task = get_task("c3")
    write_json(tmp_path / "c3-d-dev.json", DIALOGUE)
    write_json(tmp_path / "c3-m-dev.json", MIXED)
    examples = task.read_examples(str(tmp_path / "c3-d-dev.json"), False)
    featurized = task.featurize(examples, tokenizer, FeatureSettings(max_seq_length=16), False)
    outputs = [{"choice_logits": np.array([0.0, 1.0, 9.0, 9.0])},    # 2 real choices: padded ones ignored
               {"choice_logits": np.array([0.0, 2.0, 1.0, 0.5])},
               {"choice_logits": np.array([0.0, 0.0, 3.0, 9.0])}]    # 3 real choices
    predictions, nbest = task.postprocess(examples, featurized.sidecar, outputs, None)
    assert predictions == {"d-1-1-0": "四五六", "d-1-1-1": "二", "m-1-1-0": "四"}
    assert task.evaluate(examples, predictions) == {"accuracy": pytest.approx(100.0 / 3), "total": 3}
    probabilities = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()
    assert [(e["text"], e["probability"]) for e in nbest["d-1-1-0"]] == [
        ("四五六", pytest.approx(probabilities[1])), ("三", pytest.approx(probabilities[0]))]
    oracle = task.oracle_outputs(examples, featurized)
    predictions, _ = task.postprocess(examples, featurized.sidecar, oracle, None)
    assert task.evaluate(examples, predictions) == {"accuracy": 100.0, "total": 3}
    task.write_predictions(str(tmp_path), "", predictions, {})
    assert task.load_predictions(str(tmp_path / "predictions.json")) == predictions


def test_clue_submission_lines_score_by_index(tmp_path):
    data = [[["甲乙"], [question(id=0, answer="三"), question(id=1, answer="二")], "x"]]
    task = get_task("c3")
    examples = task.read_examples(write_json(tmp_path / "test.json", data), False)
    (tmp_path / "c311_predict.json").write_text('{"id": 0, "label": 1}\n{"id": 1, "label": 1}\n')
    predictions = task.load_predictions(str(tmp_path / "c311_predict.json"))
    assert predictions == {"0": 1, "1": 1}
    assert task.evaluate(examples, predictions) == {"accuracy": 50.0, "total": 2}


def test_evaluate_needs_answers(tmp_path):
    data = [[["甲"], [{"question": "一", "choice": ["二", "三"], "id": 3}], "x"]]
    task = get_task("c3")
    examples = task.read_examples(write_json(tmp_path / "test.json", data), False)
    with pytest.raises(ValueError, match="no answers"):
        task.evaluate(examples, {"3": "二"})


# -- files in the published layout (tests/data/c3) -------------------------------------------------------------
def test_dev_files_read_with_every_answer_among_its_choices():
    counts = {}
    for subset in ("d", "m"):
        task = get_task("c3", {"c3_subsets": subset})
        path = data_file("c3/c3-%s-dev.json" % subset)
        with open(path, encoding="utf-8") as f:
            raw = [(doc[2], q) for doc in json.load(f) for q in doc[1]]
        examples = task.read_examples(path, False)
        assert len(examples) == len(raw)
        for example, (doc_id, q) in zip(examples, raw):
            assert example.qid.startswith("%s-%s-" % (subset, doc_id))
            assert example.choices[example.label] == q["answer"]
        counts[subset] = len(raw)
    both = get_task("c3").read_examples(data_file("c3/c3-d-dev.json"), False)
    # document id d1 occurs in both files: the subset keeps the question ids apart
    assert len({e.qid for e in both}) == len(both) == counts["d"] + counts["m"]


def test_dev_file_oracle_and_truncation(chinese_vocab):
    path = data_file("c3/c3-m-dev.json")
    task = get_task("c3", {"c3_subsets": "m"})
    tokenizer = WordPieceTokenizer(chinese_vocab)
    examples = task.read_examples(path, True)
    settings = FeatureSettings(max_seq_length=32)
    featurized = task.featurize(examples, tokenizer, settings, True)
    # Independent count of questions whose passage must be cut: some choice overflows the 29 free positions
    # (in these files the passage is always the longest part).
    over = sum(1 for e in examples if any(
        len(tokenizer.encode(e.passage)[0]) + len(tokenizer.encode(e.question)[0]) + len(tokenizer.encode(c)[0]) > 29
        for c in e.choices))
    assert featurized.stats == {"examples": len(examples), "features": len(examples), "truncated": over}
    assert over > 0
    predictions, _ = task.postprocess(examples, featurized.sidecar, task.oracle_outputs(examples, featurized), settings)
    assert task.evaluate(examples, predictions) == {"accuracy": 100.0, "total": len(examples)}
