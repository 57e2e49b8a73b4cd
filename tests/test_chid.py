"""CHID: both file formats, the blank-centred featurization, joint decoding and accuracy.

References: hand-written fixtures with hand-computed token ids and assignments, and files in both published
layouts (tests/data/chid)."""
import itertools
import json

import numpy as np
import pytest

from conftest import SPECIAL_TOKENS, char_tokenizer, data_file
from tf_mrc.errors import UserError
from tf_mrc.tasks import DataError, FeatureSettings, get_task
from tf_mrc.tasks.chid import assign_greedy, assign_independent, assign_optimal, centred_window
from tf_mrc.tokenization import WordPieceTokenizer

SPECIAL = SPECIAL_TOKENS
CHARS = "甲乙丙丁戊己庚辛一二三四五六七八壬癸"
ID = {ch: len(SPECIAL) + i for i, ch in enumerate(CHARS)}   # 甲 5, 乙 6, ... 癸 22
PAD, UNK, CLS, SEP, MASK = range(5)


@pytest.fixture
def tokenizer(tmp_path):
    return char_tokenizer(tmp_path, CHARS)


def ids(text):
    return [ID[ch] for ch in text]


def write_lines(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


ORIGINAL_LINE = {"content": ["甲乙丙丁#idiom000001#戊己#idiom000002#庚辛", "壬#idiom000003#"],
                 "candidates": ["一二三四", "五六七八", "一二五六"]}
ORIGINAL_ANSWERS = {"#idiom000001#": 0, "#idiom000002#": 1, "#idiom000003#": 2}


def fewclue_line(id_, answer=3):
    record = {"id": id_, "candidates": ["一二三四", "五六七八", "一二五六", "三四七八", "一三五七", "二四六八", "一五二六"],
              "content": "甲乙#idiom#丙丁"}
    if answer is not None:
        record["answer"] = answer
    return record


# -- reading ------------------------------------------------------------------------------------------------
def test_reads_original_format_with_answer_option(tmp_path):
    data = write_lines(tmp_path / "dev.json", [ORIGINAL_LINE])
    (tmp_path / "answers.json").write_text(json.dumps(ORIGINAL_ANSWERS))
    examples = get_task("chid", {"chid_answers": str(tmp_path / "answers.json")}).read_examples(data, True)
    assert [(e.qid, e.label, e.group, e.blank) for e in examples] == [
        ("#idiom000001#", 0, "1", "#idiom000001#"), ("#idiom000002#", 1, "1", "#idiom000002#"),
        ("#idiom000003#", 2, "1", "#idiom000003#")]
    assert examples[2].passage == "壬#idiom000003#"
    assert all(e.choices == ORIGINAL_LINE["candidates"] for e in examples)


def test_original_format_finds_the_clue_answer_file_beside_the_data(tmp_path):
    data = write_lines(tmp_path / "train.json", [ORIGINAL_LINE])
    (tmp_path / "train_answer.json").write_text(json.dumps(ORIGINAL_ANSWERS))
    assert [e.label for e in get_task("chid").read_examples(data, True)] == [0, 1, 2]


def test_original_test_file_without_answers(tmp_path):
    data = write_lines(tmp_path / "test.json", [ORIGINAL_LINE])
    task = get_task("chid")
    assert [e.label for e in task.read_examples(data, False)] == [-1, -1, -1]
    with pytest.raises(DataError, match=r"test\.json: record 1: field '#idiom000001#': no answer in --chid_answers"):
        task.read_examples(data, True)


def test_partly_answered_original_file_is_an_error(tmp_path):
    data = write_lines(tmp_path / "dev.json", [ORIGINAL_LINE])
    (tmp_path / "a.json").write_text(json.dumps({"#idiom000001#": 0, "#idiom000003#": 2}))
    with pytest.raises(DataError, match=r"dev\.json: record 1: field '#idiom000002#': no answer in .*a\.json"):
        get_task("chid", {"chid_answers": str(tmp_path / "a.json")}).read_examples(data, False)


def test_feature_cache_key_follows_the_answer_file(tmp_path, tokenizer):
    from tf_mrc.data import cache_key
    data = write_lines(tmp_path / "dev.json", [ORIGINAL_LINE])
    (tmp_path / "dev_answer.json").write_text(json.dumps(ORIGINAL_ANSWERS))
    task, settings = get_task("chid"), FeatureSettings(max_seq_length=16)
    assert task.source_files(data) == [data, str(tmp_path / "dev_answer.json")]
    before = cache_key(task, data, tokenizer, settings, True)
    (tmp_path / "dev_answer.json").write_text(json.dumps(dict(ORIGINAL_ANSWERS, **{"#idiom000001#": 1})))
    assert cache_key(task, data, tokenizer, settings, True) != before


def test_answer_files_are_merged(tmp_path):
    data = write_lines(tmp_path / "dev.json", [ORIGINAL_LINE])
    (tmp_path / "a.json").write_text(json.dumps({"#idiom000001#": 0}))
    (tmp_path / "b.json").write_text(json.dumps({"#idiom000002#": 1, "#idiom000003#": 2}))
    task = get_task("chid", {"chid_answers": "%s,%s" % (tmp_path / "a.json", tmp_path / "b.json")})
    assert [e.label for e in task.read_examples(data, True)] == [0, 1, 2]


def test_reads_fewclue_format(tmp_path):
    data = write_lines(tmp_path / "few.json", [fewclue_line(7, 3), fewclue_line(9, 0)])
    examples = get_task("chid").read_examples(data, True)
    assert [(e.qid, e.label, e.blank, e.group) for e in examples] == [
        ("7", 3, "#idiom#", "1"), ("9", 0, "#idiom#", "2")]
    test_file = write_lines(tmp_path / "few_test.json", [fewclue_line(7, None)])
    assert get_task("chid").read_examples(test_file, False)[0].label == -1


@pytest.mark.parametrize("records, where, field", [
    ([{"content": 5, "candidates": ["一二三四", "五六七八"]}], "1", "content"),
    ([fewclue_line(1), {"content": ["甲#idiom000001#"], "candidates": ["一二三四", "五六七八"]}], "2", "content"),
    ([{"content": ["甲#idiom000001#"], "candidates": "一二三四"}], "1", "candidates"),
    ([{"content": ["甲#idiom000001#"], "candidates": ["一二三四"] * 11}], "1", "candidates"),
    ([{"content": ["甲#idiom#"], "candidates": ["一二三四", "五六七八"]}], "1", "content[0]"),
    ([{"content": ["甲乙", 3], "candidates": ["一二三四", "五六七八"]}], "1", "content[1]"),
    ([{"content": ["甲乙"], "candidates": ["一二三四", "五六七八"]}], "1", "content"),
    ([fewclue_line(1), fewclue_line(1)], "2", "id"),
    ([fewclue_line(7), dict(fewclue_line(8), id="7")], "2", "id"),
    ([dict(fewclue_line(1), id=None)], "1", "id"),
    ([{"content": ["甲#idiom000001#"], "candidates": ["一二三四", "五六七八"]},
      {"content": ["乙#idiom000001#"], "candidates": ["一二三四", "五六七八"]}], "2", "id"),
    ([dict(fewclue_line(1), content="甲#idiom#乙#idiom#")], "1 (id 1)", "content"),
    ([dict(fewclue_line(4), answer=7)], "1 (id 4)", "answer"),
    ([dict(fewclue_line(4), answer="3")], "1 (id 4)", "answer"),
    ([fewclue_line(4, None)], "1 (id 4)", "answer"),
    ([{k: v for k, v in fewclue_line(4).items() if k != "id"}], "1", "id"),
    (["just a string"], "1", "-"),
])
def test_malformed_records_name_file_record_and_field(tmp_path, records, where, field):
    data = write_lines(tmp_path / "bad.json", records)
    with pytest.raises(DataError) as err:
        get_task("chid").read_examples(data, True)
    assert str(err.value).startswith("%s: record %s: field %r: " % (data, where, field))
    assert "\n" not in str(err.value)


def test_out_of_range_answer_in_answer_file(tmp_path):
    data = write_lines(tmp_path / "dev.json", [ORIGINAL_LINE])
    (tmp_path / "a.json").write_text(json.dumps(dict(ORIGINAL_ANSWERS, **{"#idiom000002#": 3})))
    with pytest.raises(DataError, match=r"a\.json: record #idiom000002#: .*candidate index 0\.\.2, got 3"):
        get_task("chid", {"chid_answers": str(tmp_path / "a.json")}).read_examples(data, False)


def test_unknown_decoding_is_rejected():
    with pytest.raises(UserError, match="chid_decoding"):
        get_task("chid", {"chid_decoding": "beam"})


# -- featurization -------------------------------------------------------------------------------------------
def test_window_centred_on_the_blank_other_blanks_masked(tmp_path, tokenizer):
    data = write_lines(tmp_path / "dev.json", [ORIGINAL_LINE])
    task = get_task("chid")
    examples = task.read_examples(data, False)
    featurized = task.featurize(examples, tokenizer, FeatureSettings(max_seq_length=16), False)
    assert featurized.stats == {"examples": 3, "features": 3, "truncated": 0}
    blank1, blank2, blank3 = featurized.arrays
    # 16 - 3 specials - 4 candidate tokens = 9 passage tokens; the blank's 4 masks with 2 tokens left, 3 right.
    # Passage: 甲乙丙丁 [blank 1] 戊己 [blank 2] 庚辛.
    assert blank1["input_ids"][0] == [CLS] + ids("一二三四") + [SEP] + ids("丙丁") + [MASK] * 4 + ids("戊己") + [UNK, SEP]
    # Blank 2 sits too near the end to centre: the window shifts left to keep 9 tokens.
    assert blank2["input_ids"][1] == [CLS] + ids("五六七八") + [SEP] + [UNK] + ids("戊己") + [MASK] * 4 + ids("庚辛") + [SEP]
    assert blank1["segment_ids"][0] == [0] * 6 + [1] * 10
    assert blank1["input_mask"][0] == [1] * 16
    # A passage shorter than the window is padded.
    assert blank3["input_ids"][2] == [CLS] + ids("一二五六") + [SEP] + ids("壬") + [MASK] * 4 + [SEP] + [PAD] * 4
    assert blank3["input_mask"][2] == [1] * 12 + [0] * 4
    assert blank3["segment_ids"][2] == [0] * 6 + [1] * 6 + [0] * 4
    # Three real candidates of ten: the rest copy the first sequence and are masked out.
    assert blank1["choice_mask"] == [1, 1, 1] + [0] * 7
    assert all(row == blank1["input_ids"][0] for row in blank1["input_ids"][3:])
    assert [a["label"] for a in featurized.arrays] == [-1, -1, -1]
    assert [a["example_index"] for a in featurized.arrays] == [0, 1, 2]
    assert featurized.sidecar[1] == {"example_index": 1, "qid": "#idiom000002#"}
    shapes = task.feature_shapes(FeatureSettings(max_seq_length=16))
    for name, shape in shapes.items():
        assert np.asarray(blank1[name]).shape == tuple(shape)


def test_window_sized_for_the_longest_candidate(tmp_path, tokenizer):
    record = dict(fewclue_line(1, answer=1), content="甲乙丙丁戊己庚辛#idiom#甲乙丙丁戊己庚辛")
    record["candidates"] = ["一二三四", "五六七八壬"]
    task = get_task("chid")
    examples = task.read_examples(write_lines(tmp_path / "few.json", [record]), False)
    arrays = task.featurize(examples, tokenizer, FeatureSettings(max_seq_length=16), False).arrays[0]
    # 16 - 3 - 5 = 8 passage tokens for both candidates: 2 left of the blank, 2 right.
    window = ids("庚辛") + [MASK] * 4 + ids("甲乙")
    assert arrays["input_ids"][0] == [CLS] + ids("一二三四") + [SEP] + window + [SEP, PAD]
    assert arrays["input_ids"][1] == [CLS] + ids("五六七八壬") + [SEP] + window + [SEP]


def test_window_too_small_for_the_blank(tmp_path, tokenizer):
    task = get_task("chid")
    examples = task.read_examples(write_lines(tmp_path / "few.json", [fewclue_line(1)]), False)
    with pytest.raises(ValueError, match="max_seq_length 10 leaves 3 passage tokens"):
        task.featurize(examples, tokenizer, FeatureSettings(max_seq_length=10), False)


def test_training_features_need_labels(tmp_path, tokenizer):
    task = get_task("chid")
    examples = task.read_examples(write_lines(tmp_path / "few.json", [fewclue_line(1, None)]), False)
    with pytest.raises(ValueError, match="no answer to train on"):
        task.featurize(examples, tokenizer, FeatureSettings(max_seq_length=16), True)


@pytest.mark.parametrize("total, blank, budget, start", [
    (100, 50, 20, 42),   # 8 tokens left of the blank, 8 right
    (100, 50, 21, 42),   # odd room: the extra token goes right
    (100, 2, 20, 0),     # near the start: shifted right
    (100, 95, 20, 80),   # near the end: shifted left
    (10, 3, 20, 0),      # passage shorter than the window
])
def test_centred_window(total, blank, budget, start):
    assert centred_window(total, blank, budget) == start


# -- decoding ------------------------------------------------------------------------------------------------
# Three blanks of one line, three candidates. Probabilities (rows: blanks A, B, C):
#   A: .05 .40 .55     B: .35 .05 .60     C: .05 .50 .45
# independent: A->2, B->2, C->1 (candidate 2 used twice)
# greedy: B->2 (.60, the largest), then among candidates 0/1: C->1 (.50), then A->0 (.05); product .015
# optimal: A->2, B->0, C->1, product .55 * .35 * .50 = .09625, the largest of the 6 permutations
#   (others: .001125, .015, .063, .012, .001375)
JOINT_P = [[.05, .40, .55], [.35, .05, .60], [.05, .50, .45]]


def test_assignments_hand_computed():
    logp = np.log(np.array(JOINT_P))
    assert assign_independent(logp) == [2, 2, 1]
    assert assign_greedy(logp) == [0, 2, 1]
    assert assign_optimal(logp) == [2, 0, 1]


def test_more_blanks_than_candidates_fall_back_to_argmax():
    logp = np.log(np.array([[.9, .1], [.8, .2], [.3, .7]]))
    assert assign_greedy(logp) == [0, 0, 1]      # rows 0 and 2 assigned; row 1 left over takes its argmax
    assert assign_optimal(logp) == [0, 0, 1]     # .9*.7 beats every other pair; row 1 left over


def test_optimal_assignment_matches_brute_force():
    rng = np.random.RandomState(0)
    for rows, columns in [(1, 1), (1, 4), (3, 3), (4, 7), (6, 6), (5, 2), (7, 3)]:
        for _ in range(20):
            logp = np.log(rng.dirichlet(np.ones(columns), size=rows))
            chosen = assign_optimal(logp)
            if rows <= columns:
                assert len(set(chosen)) == rows
                best = max(itertools.permutations(range(columns), rows),
                           key=lambda cols: sum(logp[r, c] for r, c in enumerate(cols)))
                assert chosen == list(best)
            else:
                # Each candidate goes to one blank (the best such matching); the other blanks take their argmax.
                best = max(itertools.permutations(range(rows), columns),
                           key=lambda rs: sum(logp[r, c] for c, r in enumerate(rs)))
                expected = list(np.argmax(logp, axis=1))
                for column, row in enumerate(best):
                    expected[row] = column
                assert chosen == expected


def test_optimal_assignment_matches_scipy_on_full_lines():
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.RandomState(1)
    for _ in range(200):
        logp = np.log(rng.dirichlet(np.ones(10), size=10))
        rows, columns = optimize.linear_sum_assignment(-logp)
        assert assign_optimal(logp) == [int(c) for c in columns[np.argsort(rows)]]


@pytest.mark.parametrize("decoding, accuracy", [("optimal", 100.0), ("greedy", 100.0 / 3), ("independent", 200.0 / 3)])
def test_joint_decoding_beats_greedy_through_postprocess(tmp_path, tokenizer, decoding, accuracy):
    line = {"content": ["甲#idiom000001#乙#idiom000002#丙#idiom000003#"], "candidates": ["一二三四", "五六七八", "一二五六"]}
    data = write_lines(tmp_path / "dev.json", [line])
    (tmp_path / "dev_answer.json").write_text(json.dumps({"#idiom000001#": 2, "#idiom000002#": 0, "#idiom000003#": 1}))
    task = get_task("chid", {"chid_decoding": decoding})
    examples = task.read_examples(data, False)
    featurized = task.featurize(examples, tokenizer, FeatureSettings(max_seq_length=16), False)
    outputs = []
    for row, shift in zip(JOINT_P, (3.0, -1.0, 0.5)):   # logits are log-probabilities up to a per-blank shift
        logits = np.full(10, 50.0)                       # padded choices score highest: must never be chosen
        logits[:3] = np.log(row) + shift
        outputs.append({"choice_logits": logits})
    predictions, nbest = task.postprocess(examples, featurized.sidecar, outputs, None)
    assert all(0 <= index < 3 for index in predictions.values())
    assert task.evaluate(examples, predictions) == {"accuracy": pytest.approx(accuracy), "total": 3}
    assert [entry["index"] for entry in nbest["#idiom000002#"]] == [2, 0, 1]
    assert nbest["#idiom000002#"][0]["probability"] == pytest.approx(.60)
    assert nbest["#idiom000002#"][0]["text"] == "一二五六"


def test_oracle_scores_100_and_predictions_round_trip(tmp_path, tokenizer):
    data = write_lines(tmp_path / "dev.json", [ORIGINAL_LINE])
    (tmp_path / "dev_answer.json").write_text(json.dumps(ORIGINAL_ANSWERS))
    task = get_task("chid")
    examples = task.read_examples(data, False)
    featurized = task.featurize(examples, tokenizer, FeatureSettings(max_seq_length=16), False)
    predictions, nbest = task.postprocess(examples, featurized.sidecar, task.oracle_outputs(examples, featurized), None)
    assert predictions == ORIGINAL_ANSWERS
    assert task.evaluate(examples, predictions) == {"accuracy": 100.0, "total": 3}
    task.write_predictions(str(tmp_path), "dev_", predictions, nbest)
    assert task.load_predictions(str(tmp_path / "dev_predictions.json")) == ORIGINAL_ANSWERS
    assert not (tmp_path / "dev_chidf_predict.json").exists()   # CLUE's format is the JSON map itself


def test_fewclue_submission_lines(tmp_path, tokenizer):
    task = get_task("chid")
    examples = task.read_examples(write_lines(tmp_path / "few.json", [fewclue_line(7, 3), fewclue_line(9, 0)]), False)
    task.write_predictions(str(tmp_path), "", {"7": 3, "9": 1}, {})
    lines = (tmp_path / "chidf_predict.json").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"id": 7, "answer": 3}, {"id": 9, "answer": 1}]
    loaded = task.load_predictions(str(tmp_path / "chidf_predict.json"))
    assert loaded == {"7": 3, "9": 1}
    assert task.evaluate(examples, loaded) == {"accuracy": 50.0, "total": 2}
    # A one-line submission is still read as a submission line, not as a {id: answer} map.
    (tmp_path / "one.json").write_text('{"id": 9, "answer": 0}\n')
    assert task.load_predictions(str(tmp_path / "one.json")) == {"9": 0}


def test_missing_predictions_score_zero(tmp_path):
    task = get_task("chid")
    examples = task.read_examples(write_lines(tmp_path / "few.json", [fewclue_line(7, 3), fewclue_line(9, 0)]), False)
    assert task.evaluate(examples, {"7": 3}) == {"accuracy": 50.0, "total": 2}


# -- files in the published layouts (tests/data/chid) ----------------------------------------------------------
def test_fewclue_file(chinese_vocab):
    path = data_file("chid/fewclue_chid_dev.fixture.json")
    with open(path, encoding="utf-8") as f:
        raw = [json.loads(line) for line in f if line.strip()]
    task = get_task("chid")
    examples = task.read_examples(path, True)
    assert [(e.qid, e.label, e.choices) for e in examples] == [
        (str(r["id"]), r["answer"], r["candidates"]) for r in raw]
    settings = FeatureSettings(max_seq_length=task.default_max_seq_length)
    featurized = task.featurize(examples, WordPieceTokenizer(chinese_vocab), settings, True)
    assert featurized.stats == {"examples": len(raw), "features": len(raw), "truncated": 0}
    for arrays in featurized.arrays:
        assert arrays["input_ids"][0].count(MASK_ID_REAL) == 4          # the blank's four masks are in the window
        assert arrays["choice_mask"] == [1] * 7 + [0] * 3
    outputs = task.oracle_outputs(examples, featurized)
    for decoding in ("optimal", "greedy", "independent"):
        decoder = get_task("chid", {"chid_decoding": decoding})
        predictions, _ = decoder.postprocess(examples, featurized.sidecar, outputs, settings)
        assert decoder.evaluate(examples, predictions) == {"accuracy": 100.0, "total": len(raw)}


def test_clue_file_with_its_answer_map_beside(chinese_vocab):
    """CLUE's layout: dev.json with numbered blanks, dev_answer.json beside it (found without --chid_answers)."""
    path = data_file("chid/dev.json")
    with open(data_file("chid/dev_answer.json"), encoding="utf-8") as f:
        answers = json.load(f)
    task = get_task("chid")
    examples = task.read_examples(path, False)
    assert {e.qid: e.label for e in examples} == answers
    assert [e.group for e in examples] == ["1", "1", "2", "2"]      # blanks of a line share its candidates
    settings = FeatureSettings(max_seq_length=task.default_max_seq_length)
    featurized = task.featurize(examples, WordPieceTokenizer(chinese_vocab), settings, False)
    predictions, _ = task.postprocess(examples, featurized.sidecar, task.oracle_outputs(examples, featurized),
                                      settings)
    assert predictions == answers


MASK_ID_REAL = 103   # [MASK] in the Chinese BERT vocabulary

