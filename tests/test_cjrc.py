"""CJRC: reader, class labels, class-head decoding, prediction files, passage split, official / CMRC scoring."""
import collections
import json

import numpy as np
import pytest

from conftest import char_tokenizer, data_file
from tf_mrc import metrics
from tf_mrc.errors import UserError
from tf_mrc.tasks import DataError, FeatureSettings, get_task
from tf_mrc.tasks.cjrc import split_by_passage
from tf_mrc.tasks.span import SpanExample
from tf_mrc.tokenization import WordPieceTokenizer

CIVIL_CONTEXT = "原告张三于2015年借给被告李四800元，约定YES一年内归还。"
CRIMINAL_CONTEXT = "被告人王五盗窃手机一部，价值3000元，后主动投案。"


def _question(qid, text, starts=None, is_impossible="false", question="问题？"):
    """A question whose answers are ``text`` (a string or a list of them); starts default to the
    first occurrence in the context for spans and -1 for YES / NO / ''."""
    texts = text if isinstance(text, list) else [text]
    answers = [{"text": t, "answer_start": -1 if starts is None else starts[i]} for i, t in enumerate(texts)]
    return {"id": qid, "question": question, "answers": answers, "is_impossible": is_impossible}


def _article(domain, context, qas, caseid="1"):
    return {"caseid": caseid, "domain": domain,
            "paragraphs": [{"context": context, "casename": "民间借贷纠纷", "qas": qas}]}


def _fixture():
    return {"version": "1.0", "data": [
        _article("civil", CIVIL_CONTEXT, [
            _question("c_span", ["800元", "李四800元", "800元"], starts=[16, 14, 16]),
            _question("c_yes", "YES"),
            _question("c_unknown_empty", "", is_impossible="true"),
            {"id": "c_unknown_none", "question": "没有答案？", "answers": [], "is_impossible": "true"},
        ]),
        _article("criminal", CRIMINAL_CONTEXT, [
            _question("k_no", "NO"),
            _question("k_span_off", "手机一部", starts=[6]),   # published start off by one: found at 7
            _question("k_flag_but_text", "3000元", starts=[14], is_impossible="true"),
        ], caseid="2"),
    ]}


def _write(tmp_path, obj, name="cjrc.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_reader_types_gold_texts_and_domains(tmp_path):
    examples = {e.qid: e for e in get_task("cjrc").read_examples(_write(tmp_path, _fixture()), False)}
    assert {qid: (e.answer_type, e.domain) for qid, e in examples.items()} == {
        "c_span": ("span", "civil"), "c_yes": ("yes", "civil"), "c_unknown_empty": ("unknown", "civil"),
        "c_unknown_none": ("unknown", "civil"), "k_no": ("no", "criminal"), "k_span_off": ("span", "criminal"),
        "k_flag_but_text": ("span", "criminal")}
    assert examples["c_span"].gold_texts == ["800元", "李四800元", "800元"]
    assert CIVIL_CONTEXT[16:20] == "800元" and CRIMINAL_CONTEXT[14:19] == "3000元"
    assert (examples["c_span"].answer_start, examples["c_span"].answer_text) == (16, "800元")
    assert examples["k_flag_but_text"].answer_start == 14
    assert CRIMINAL_CONTEXT[7:11] == "手机一部" and examples["k_span_off"].answer_start == 7
    # YES is never cut from the passage, even though this passage contains the letters "YES"
    assert (examples["c_yes"].answer_start, examples["c_yes"].answer_text, examples["c_yes"].gold_texts) == \
        (-1, "", ["YES"])
    assert examples["c_unknown_none"].gold_texts == [""] and examples["c_unknown_empty"].gold_texts == [""]


def test_reader_accepts_the_blinded_competition_input(tmp_path):
    """The competition's prediction input: domain / casename / is_impossible '' and no answers."""
    data = {"data": [_article("", CIVIL_CONTEXT, [{"id": "t1", "question": "谁借钱？", "answers": [],
                                                   "is_impossible": ""}])]}
    task = get_task("cjrc")
    examples = task.read_examples(_write(tmp_path, data), False)
    assert [(e.qid, e.domain, e.answer_type) for e in examples] == [("t1", "", "unknown")]
    with pytest.raises(UserError, match="t1 has no domain"):
        task.evaluate(examples, {"t1": ""})


def _broken(mutate):
    data = _fixture()
    mutate(data)
    return data


@pytest.mark.parametrize("mutate, record, field", [
    (lambda d: d["data"][0].update(domain="family"), "c_span", "domain"),
    (lambda d: d["data"][1].pop("domain"), "k_no", "domain"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][1].update(is_impossible="maybe"), "c_yes", "is_impossible"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(is_impossible=1), "k_no", "is_impossible"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(id="c_span"), "c_span", "id"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][1].update(answers=[{"text": None}]), "k_span_off", "answers"),
])
def test_malformed_records_name_file_record_and_field(tmp_path, mutate, record, field):
    path = _write(tmp_path, _broken(mutate))
    with pytest.raises(DataError) as err:
        get_task("cjrc").read_examples(path, False)
    message = str(err.value)
    assert path in message and "question %s" % record in message and repr(field) in message
    assert "\n" not in message


LONG_CONTEXT = "一二三四五六七八九十甲乙丙丁戊己庚辛壬癸"   # 20 single-character tokens


def _windowed(tmp_path, qas, is_training, settings=None):
    task = get_task("cjrc")
    examples = task.read_examples(_write(tmp_path, {"data": [_article("civil", LONG_CONTEXT, qas)]}), is_training)
    settings = settings or FeatureSettings(max_seq_length=12, doc_stride=4, max_query_length=4)
    tokenizer = char_tokenizer(tmp_path, sorted(set(LONG_CONTEXT + "问")))
    return task, examples, settings, task.featurize(examples, tokenizer, settings, is_training)


def test_class_labels_per_window(tmp_path):
    """8 passage tokens per window, stride 4: windows start at tokens 0, 4, 8, 12; 丙丁 (tokens 12-13) lies
    in the last two only. The span question's class loss is off (weight 0) where its answer is absent."""
    qas = [_question("s", "丙丁", starts=[12], question="问"), _question("y", "YES", question="问"),
           _question("n", "NO", question="问"), _question("u", "", is_impossible="true", question="问")]
    task, examples, _, featurized = _windowed(tmp_path, qas, is_training=True)
    assert set(task.feature_shapes(FeatureSettings())) >= {"answer_class", "class_weight"}
    labels = collections.defaultdict(list)
    for features in featurized.arrays:
        labels[examples[features["example_index"]].qid].append(
            (features["answer_class"], features["class_weight"], features["start_position"]))
    assert labels["s"] == [(0, 0, 0), (0, 0, 0), (0, 1, 3 + 12 - 8), (0, 1, 3)]
    assert labels["y"] == [(1, 1, 0)] * 4 and labels["n"] == [(2, 1, 0)] * 4 and labels["u"] == [(3, 1, 0)] * 4


def _outputs(featurized, length, class_logits, spans=()):
    """Per-window outputs: -10 everywhere, +peak at (window, start token, end token, peak) from ``spans``."""
    outputs = []
    for window, record in enumerate(featurized.sidecar):
        start, end = np.full(length, -10.0), np.full(length, -10.0)
        for span_window, first, last, peak in spans:
            if span_window == window:
                start[record["doc_offset"] + first] = end[record["doc_offset"] + last] = peak
        outputs.append({"start_logits": start, "end_logits": end,
                        "class_logits": np.asarray(class_logits[window], dtype=float)})
    return outputs


def test_class_head_decides_yes_even_when_a_span_scores_high(tmp_path):
    settings = FeatureSettings(max_seq_length=32)
    task, examples, settings, featurized = _windowed(tmp_path, [_question("q", "YES", question="问")], False,
                                                     settings)
    assert len(featurized.sidecar) == 1
    outputs = _outputs(featurized, 32, [[1.0, 3.0, 0.0, 0.0]], spans=[(0, 5, 6, 50.0)])   # 六七 scores 100
    predictions, nbest = task.postprocess(examples, featurized.sidecar, outputs, settings)
    assert predictions == {"q": "YES"}
    entries = nbest["q"]
    assert entries[0] == {"text": "YES", "class": "yes", "class_probability": pytest.approx(
        np.exp(3) / (np.exp(1) + np.exp(3) + 2))}
    assert [e["class"] for e in entries if e["class"] != "span"] == ["yes", "no", "unknown"]
    spans = [e for e in entries if e["class"] == "span"]
    assert spans[0]["text"] == "六七" and spans[0]["class_probability"] == pytest.approx(
        np.exp(1) / (np.exp(1) + np.exp(3) + 2))
    assert entries.index(spans[0]) == 1       # the span class ranks second: its spans follow YES
    # the same scores with the class head on 'span' give the span; on 'no' / 'unknown' give NO / ''
    for class_logits, answer in (([3.0, 1.0, 0.0, 0.0], "六七"), ([0, 0, 2, 0], "NO"), ([0, 0, 0, 2], "")):
        outputs = _outputs(featurized, 32, [class_logits], spans=[(0, 5, 6, 50.0)])
        assert task.postprocess(examples, featurized.sidecar, outputs, settings)[0] == {"q": answer}


def test_class_evidence_comes_from_the_window_of_the_best_span(tmp_path):
    """Window 2 holds the best span and says 'span' mildly; windows 0, 1 and 3 (no answer there, class loss
    off in training) say 'unknown' loudly. Equal averaging would answer ''; the best-span window answers."""
    task, examples, settings, featurized = _windowed(tmp_path, [_question("q", "丙丁", starts=[12],
                                                                          question="问")], False)
    class_logits = [[0, 0, 0, 8.0], [0, 0, 0, 8.0], [1.0, 0, 0, 0], [0, 0, 0, 8.0]]
    outputs = _outputs(featurized, 12, class_logits, spans=[(2, 4, 5, 20.0)])   # window 2 starts at token 8
    predictions, nbest = task.postprocess(examples, featurized.sidecar, outputs, settings)
    assert predictions == {"q": "丙丁"}
    softmax = np.exp(class_logits) / np.exp(class_logits).sum(axis=1, keepdims=True)
    assert np.argmax(softmax.mean(axis=0)) == 3             # what equal averaging would have chosen
    assert nbest["q"][0]["window"] == 2 and nbest["q"][0]["class_probability"] == pytest.approx(softmax[2][0])


def _hand_examples():
    def example(qid, domain, gold):
        return SpanExample(qid=qid, question="?", context="x", gold_texts=gold, domain=domain,
                           answer_type={"YES": "yes", "NO": "no", "": "unknown"}.get(gold[0], "span"))
    return [example("c1", "civil", ["800元"]), example("c2", "civil", ["YES"]),
            example("k1", "criminal", [""]), example("k2", "criminal", ["NO"]),
            example("k3", "criminal", ["甲乙", "甲", "乙丙"])]


PREDICTIONS = {"c1": "800", "c2": "YES", "k1": "", "k2": "YES"}   # k3 missing


def test_evaluate_official_by_hand():
    """c1: bag {8,0,0,元} vs {8,0,0}: P 1, R 3/4, F1 6/7. c2, k1 exact. k2 wrong type. k3 missing (0)."""
    result = get_task("cjrc").evaluate(_hand_examples(), PREDICTIONS)
    assert result["metric"] == "official" and result["total"] == 5 and result["skipped"] == 1
    assert result["f1"] == pytest.approx(100 * (6 / 7 + 1 + 1) / 5) and result["em"] == pytest.approx(40.0)
    assert result["civil"] == {"f1": pytest.approx(100 * (6 / 7 + 1) / 2), "em": 50.0, "total": 2}
    assert result["criminal"] == {"f1": pytest.approx(100 / 3), "em": pytest.approx(100 / 3), "total": 3}
    assert result["type_accuracy"] == {"span": 50.0, "yes": 100.0, "no": 0.0, "unknown": 100.0}
    assert result["type_total"] == {"span": 2, "yes": 1, "no": 1, "unknown": 1}
    # k3 leave-one-out: predicting 甲 scores max(1, 0.5)=1 twice (rounds that keep 甲) and 2/3 without it.
    k3 = get_task("cjrc").evaluate(_hand_examples()[4:], {"k3": "甲"})
    assert k3["f1"] == pytest.approx(100 * (1 + 1 + 2 / 3) / 3) and k3["em"] == pytest.approx(200 / 3)


def test_evaluate_cmrc_definition_by_hand():
    """CMRC segments: '800元' -> ['800', '元'] vs ['800']: F1 2/3. '' vs '': EM 1 but F1 0 (nothing shared)."""
    result = get_task("cjrc", {"metric": "cmrc"}).evaluate(_hand_examples(), PREDICTIONS)
    assert result["metric"] == "cmrc" and result["total"] == 5
    assert result["f1"] == pytest.approx(100 * (2 / 3 + 1) / 5) and result["em"] == pytest.approx(40.0)
    assert result["criminal"] == {"f1": 0.0, "em": pytest.approx(100 / 3), "total": 3}
    with pytest.raises(UserError, match=r"--metric must be one of official\|cmrc, got 'squad'"):
        get_task("cjrc", {"metric": "squad"})


def test_official_prediction_list_round_trip(tmp_path):
    task = get_task("cjrc")
    predictions = {"1_1": "夫妻感情破裂", "1_3": "YES", "1_6": ""}
    task.write_predictions(str(tmp_path), "dev_", predictions, {qid: [] for qid in predictions})
    official = json.loads((tmp_path / "dev_predictions_cjrc_official.json").read_text(encoding="utf-8"))
    assert official == [{"id": "1_1", "answer": "夫妻感情破裂"}, {"id": "1_3", "answer": "YES"},
                        {"id": "1_6", "answer": ""}]
    assert task.load_predictions(str(tmp_path / "dev_predictions_cjrc_official.json")) == predictions
    assert task.load_predictions(str(tmp_path / "dev_predictions.json")) == predictions
    assert (tmp_path / "dev_nbest_predictions.json").exists()


@pytest.mark.parametrize("content, match", [
    ("[\"x\"]", "item 0"), ("[{\"id\": \"a\"}]", "item 0"), ("3", "expected"),
    ("{\"a\": 1}", "question a: field 'answer'"),
    ("[{\"id\": \"a\", \"answer\": \"x\"}, {\"id\": \"a\", \"answer\": \"y\"}]", "question a: field 'id'"),
])
def test_load_predictions_rejects_other_shapes(tmp_path, content, match):
    path = tmp_path / "pred.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        get_task("cjrc").load_predictions(str(path))


def _passage_examples(passages, per_passage=3):
    return [SpanExample(qid="%d_%d" % (p, q), question="?", context=context, gold_texts=["x"])
            for p, context in enumerate(passages) for q in range(per_passage)]


def test_split_by_passage_is_reproducible_and_leak_free():
    passages = ["案情%d" % i for i in range(50)] + ["案情7"]     # passage 7 repeated under another case id
    examples = _passage_examples(passages)
    first, held_out = split_by_passage(examples, 0.9)
    assert split_by_passage(examples, 0.9) == (first, held_out)
    assert {e.context for e in first}.isdisjoint({e.context for e in held_out})
    assert len({e.context for e in first}) == 45 and len({e.context for e in held_out}) == 5
    assert sorted(e.qid for e in first + held_out) == sorted(e.qid for e in examples)
    assert [e.qid for e in first] == [e.qid for e in examples if e in first]         # file order kept
    assert split_by_passage(examples, 0.9, seed=1) != (first, held_out)
    assert len({e.context for e in split_by_passage(examples, 0.999)[1]}) == 1       # never an empty side
    with pytest.raises(UserError, match="strictly between"):
        split_by_passage(examples, 1.0)


def test_split_options_select_the_parts(tmp_path):
    data = {"data": [_article("civil" if i % 2 else "criminal", "第%d份判决书的案情。" % i,
                              [_question("%d_1" % i, "YES")], caseid=str(i)) for i in range(20)]}
    path = _write(tmp_path, data)
    everything = get_task("cjrc").read_examples(path, True)
    task = get_task("cjrc", {"split_ratio": 0.75})
    train, dev = task.read_examples(path, True), task.read_examples(path, False)
    assert (len(train), len(dev)) == (15, 5)
    assert sorted(e.qid for e in train + dev) == sorted(e.qid for e in everything)
    assert ([e.qid for e in train], [e.qid for e in dev]) == tuple(
        [e.qid for e in part] for part in split_by_passage(everything, 0.75))
    explicit = get_task("cjrc", {"split": "train"})          # ratio defaults to 0.9; the part is named
    assert [e.qid for e in explicit.read_examples(path, False)] == \
        [e.qid for e in split_by_passage(everything, 0.9)[0]]
    with pytest.raises(UserError, match="split_ratio"):
        get_task("cjrc", {"split_ratio": 90})
    one = _write(tmp_path, {"data": data["data"][:1]}, "one.json")
    with pytest.raises(DataError, match="cannot split"):
        task.read_examples(one, True)


def test_evaluate_cli_reads_the_official_list(tmp_path, capsys):
    from tf_mrc import evaluate
    data = _write(tmp_path, _fixture())
    prediction_file = tmp_path / "result.json"
    prediction_file.write_text(json.dumps([{"id": "c_span", "answer": "800元"}, {"id": "k_no", "answer": "NO"}]),
                               encoding="utf-8")
    evaluate.main(["--task=cjrc", data, str(prediction_file)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # c_span: leave-one-out over [800元, 李四800元, 800元] -> (1 + 1 + 1) / 3 = 1; k_no exact; 5 others 0
    assert (result["total"], result["skipped"], result["f1"], result["em"]) == (7, 5, pytest.approx(200 / 7),
                                                                                pytest.approx(200 / 7))
    evaluate.main(["--task=cjrc", "--metric=cmrc", data, str(prediction_file)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["metric"] == "cmrc"


# -- a dev file in the published layout (tests/data/cjrc: three gold answers per question) -------------------

def test_dev_file_reads_and_oracle_matches_the_first_gold_answer(chinese_vocab):
    path = data_file("cjrc/cjrc_dev.fixture.json")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    questions = [(article["domain"], qa) for article in raw["data"] for paragraph in article["paragraphs"]
                 for qa in paragraph["qas"]]
    task = get_task("cjrc")
    examples = task.read_examples(path, False)
    types = collections.Counter(e.answer_type for e in examples)
    expected = collections.Counter({"YES": "yes", "NO": "no", "": "unknown"}.get(qa["answers"][0]["text"], "span")
                                   for _, qa in questions)
    assert len(examples) == len(questions) and types == expected and len(types) == 4
    assert collections.Counter(e.domain for e in examples) == collections.Counter(d for d, _ in questions)
    flagged_but_answered = [e.qid for e, (_, qa) in zip(examples, questions)
                            if qa["is_impossible"] == "true" and qa["answers"][0]["text"] != ""]
    assert flagged_but_answered == ["c6"] and examples[5].answer_type == "span"   # the text decides, not the flag

    first_gold = metrics.evaluate_cjrc([(qa["id"], domain, [a["text"] for a in qa["answers"]])
                                        for domain, qa in questions],
                                       {qa["id"]: qa["answers"][0]["text"] for _, qa in questions})["overall"]
    featurized = task.featurize(examples, WordPieceTokenizer(chinese_vocab), FeatureSettings(), False)
    outputs = task.oracle_outputs(examples, featurized)
    # Every answer fits a window and no decoding limit: the oracle gives exactly the first gold answers.
    unlimited = FeatureSettings(max_answer_length=512)
    predictions, nbest = task.postprocess(examples, featurized.sidecar, outputs, unlimited)
    result = task.evaluate(examples, predictions)
    assert featurized.stats.get("unaligned", 0) == featurized.stats.get("truncated", 0) == 0, featurized.stats
    assert predictions == {e.qid: e.gold_texts[0] for e in examples}
    assert (result["f1"], result["em"]) == (pytest.approx(first_gold["f1"]), pytest.approx(first_gold["em"]))
    assert result["type_accuracy"] == {"span": 100.0, "yes": 100.0, "no": 100.0, "unknown": 100.0}
    assert all(nbest[e.qid][0]["class"] == e.answer_type for e in examples)
    # With a 3-token limit exactly the answers counted too long are lost.
    short = FeatureSettings(max_answer_length=3)
    featurized = task.featurize(examples, WordPieceTokenizer(chinese_vocab), short, False)
    predictions, _ = task.postprocess(examples, featurized.sidecar, task.oracle_outputs(examples, featurized), short)
    lost = [e.qid for e in examples if predictions[e.qid] != e.gold_texts[0]]
    assert len(lost) == featurized.stats["too_long"] > 0, lost
