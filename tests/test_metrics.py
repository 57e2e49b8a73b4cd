"""The official metrics against hand-worked examples of each rule of their published definitions
(ymcui/cmrc2018 cmrc2018_evaluate.py, CAIL2019 CJRC evaluate.py) and on files in the published layouts."""
import json

import nltk
import pytest
from nltk.tokenize.punkt import PunktSentenceTokenizer

from conftest import data_file
from tf_mrc import metrics
from tf_mrc.errors import UserError
from tf_mrc.tasks import get_task


# -- CMRC 2018: segmentation ------------------------------------------------------------------------

def test_each_cjk_character_is_a_segment_only_inside_u4e00_u9fa5():
    assert metrics.mixed_segmentation("北京大学") == ["北", "京", "大", "学"]
    assert metrics.mixed_segmentation("龥") == ["龥"]                 # U+9FA5, the last one in the range
    assert metrics.mixed_segmentation("龦龦") == ["龦龦"]             # U+9FA6 is outside: part of an NLTK run
    assert metrics.mixed_segmentation("中 国") == ["中", "国"]         # a whitespace run yields no word


def test_lower_case_and_strip_before_segmenting():
    assert metrics.mixed_segmentation("  iPhone X发布 ") == ["iphone", "x", "发", "布"]


def test_official_punctuation_is_a_segment_or_removed():
    assert metrics.mixed_segmentation("《红楼梦》") == ["《", "红", "楼", "梦", "》"]
    assert metrics.mixed_segmentation("《红楼梦》", rm_punc=True) == ["红", "楼", "梦"]
    # Full-width marks of the list split a run like CJK characters do; ASCII ',' and '.' are not in the list.
    assert metrics.mixed_segmentation("a（b）c，d") == ["a", "（", "b", "）", "c", "，", "d"]
    assert metrics.mixed_segmentation("a-b/c", rm_punc=True) == ["abc"]
    assert metrics.mixed_segmentation("hello, world", rm_punc=True) == ["hello", ",", "world"]
    assert metrics.remove_punctuation(" 《红楼梦》：第一回，「甲」～乙 ") == "红楼梦第一回甲乙"
    assert metrics.remove_punctuation("a,b.c") == "a,b.c"


def test_two_character_ellipsis_entry_never_matches():
    assert "……" in metrics.CMRC_PUNCTUATION
    assert metrics.remove_punctuation("好……") == "好……"
    assert metrics.mixed_segmentation("好……", rm_punc=True) == ["好", "……"]
    assert metrics.mixed_segmentation("a……b") == ["a……b"]


def test_other_runs_are_nltk_words():
    assert metrics.mixed_segmentation("2018年") == ["2018", "年"]
    assert metrics.mixed_segmentation("Hello, world") == ["hello", ",", "world"]
    assert metrics.mixed_segmentation("3.5%的人") == ["3.5", "%", "的", "人"]
    assert metrics.mixed_segmentation("don't") == ["do", "n't"]
    assert metrics.mixed_segmentation('"ok"') == ["``", "ok", "''"]
    # preserve_line=False: sentences are split first, so a sentence-final period becomes its own token.
    assert metrics.mixed_segmentation("it is big. it is") == ["it", "is", "big", ".", "it", "is"]


TEXTS = ["u.s.a. is big. it is", "mr. smith paid $3.50 (cash)!", "x...y", " 12 ", "a. b",
         "i met dr. smith in the u.s. last year.", "he was born in jan. 1990 in st. louis. see fig. 3 and no. 5."]


def test_shipped_punkt_parameters_are_nltks_english_model():
    """The shipped files read as NLTK's own punkt_tab loader reads them (NLTK >= 3.8.2; 3.8.1 has no loader)."""
    punkt = pytest.importorskip("nltk.tokenize.punkt")
    if not hasattr(punkt, "load_punkt_params"):
        pytest.skip("NLTK %s has no punkt_tab loader" % nltk.__version__)
    ours, nltks = metrics.load_punkt_parameters(), punkt.load_punkt_params(metrics.PUNKT_ENGLISH)
    assert ours.abbrev_types == nltks.abbrev_types and {"dr", "u.s", "mr", "st", "jan"} <= ours.abbrev_types
    assert ours.collocations == nltks.collocations and ours.sent_starters == nltks.sent_starters
    assert dict(ours.ortho_context) == dict(nltks.ortho_context) and len(ours.ortho_context) == 20366


def test_word_tokenize_is_nltk_word_tokenize_with_the_shipped_model(tmp_path, monkeypatch):
    """nltk.word_tokenize itself, its data path pointed at the shipped files, is the reference."""
    punkt = pytest.importorskip("nltk.tokenize.punkt")
    if not hasattr(punkt, "PunktTokenizer"):
        pytest.skip("NLTK %s reads only the pickled model" % nltk.__version__)
    import shutil
    shutil.copytree(metrics.PUNKT_ENGLISH, str(tmp_path / "tokenizers" / "punkt_tab" / "english"))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    nltk.tokenize._get_punkt_tokenizer.cache_clear()
    try:
        expected = [nltk.word_tokenize(text) for text in TEXTS]
    finally:
        nltk.tokenize._get_punkt_tokenizer.cache_clear()
    assert [metrics.word_tokenize(text, metrics.shipped_sentence_splitter()) for text in TEXTS] == expected


def test_abbreviations_keep_their_period_without_nltk_data(monkeypatch):
    """Hand-checked against the English model's abbreviation list (dr, u.s): a period after an abbreviation
    stays on the word, one at a sentence end is a token. The untrained splitter (what NLTK gives without its
    data) splits both, so the F1 of such answers would differ from the official script's."""
    monkeypatch.setattr(metrics, "_nltk_punkt_installed", lambda: False)
    text = "i met dr. smith in the u.s. last year."
    assert metrics.word_tokenize(text) == ["i", "met", "dr.", "smith", "in", "the", "u.s.", "last", "year", "."]
    untrained = metrics.word_tokenize(text, PunktSentenceTokenizer())
    assert untrained == ["i", "met", "dr", ".", "smith", "in", "the", "u.s", ".", "last", "year", "."]
    assert metrics.mixed_segmentation("Dr. Smith在U.S. Army服役") == ["dr.", "smith", "在", "u.s.", "army", "服", "役"]
    # gold 'dr. smith' (2 segments) vs prediction 'dr. smith jr': LCS 2, precision 2/3, recall 1 -> F1 0.8
    assert metrics.cmrc_f1(["Dr. Smith"], "Dr. Smith Jr") == pytest.approx(0.8)


# -- CMRC 2018: LCS, F1, EM -------------------------------------------------------------------------

def test_find_lcs_is_the_longest_contiguous_run():
    assert metrics.find_lcs(list("abcde"), list("xbcdy")) == (["b", "c", "d"], 3)
    assert metrics.find_lcs(list("axbxc"), list("abc")) == (["a"], 1)     # not the subsequence 'abc'
    assert metrics.find_lcs(list("abcd"), list("cdab")) == (["a", "b"], 2)  # tie: the run ending first in s1
    assert metrics.find_lcs([], list("a")) == ([], 0)


def test_cmrc_f1_by_hand():
    # 4 common segments of 7 predicted and 4 gold: P = 4/7, R = 1, F1 = 8/11.
    assert metrics.cmrc_f1(["北京大学"], "北京大学图书馆") == pytest.approx(8 / 11)
    # ['2018', '年', '世', '界', '杯'] vs ['2018', '年']: P = 1, R = 2/5, F1 = 4/7.
    assert metrics.cmrc_f1(["2018年世界杯"], "2018年") == pytest.approx(4 / 7)
    # Only the contiguous run '丙丁' counts: P = R = 2/4.
    assert metrics.cmrc_f1(["甲乙丙丁"], "甲丙丁乙") == pytest.approx(0.5)
    assert metrics.cmrc_f1(["《红楼梦》"], "红楼梦") == 1.0
    assert metrics.cmrc_f1(["好"], "。") == 0.0
    # Max over gold answers: '北京' alone gives 2*(2/7)/(2/7+1) = 4/9 < 8/11.
    assert metrics.cmrc_f1(["北京", "北京大学"], "北京大学图书馆") == pytest.approx(8 / 11)
    assert metrics.cmrc_f1(["北京"], "北京大学图书馆") == pytest.approx(4 / 9)


def test_cmrc_em_after_punctuation_removal():
    assert metrics.cmrc_em(["《红楼梦》"], "红楼梦") == 1
    assert metrics.cmrc_em(["iPhone"], " IPHONE ") == 1
    assert metrics.cmrc_em(["甲", "乙"], "乙") == 1
    assert metrics.cmrc_em(["中国"], "中 国") == 0                 # inner spaces stay
    assert metrics.cmrc_f1(["中国"], "中 国") == 1.0               # ...but make no segment
    assert metrics.cmrc_em(["a,b"], "ab") == 0                     # ASCII comma is not official punctuation
    assert metrics.cmrc_em(["好……"], "好") == 0                   # '……' is never removed


def test_evaluate_cmrc_averages_over_all_questions(tmp_path):
    context = "《红楼梦》藏在北京大学图书馆甲乙。"
    qas = [{"id": qid, "question": "?", "answers": [{"text": text, "answer_start": context.find(text)}
                                                   for text in answers]}
           for qid, answers in [("q1", ["红楼梦"]), ("q2", ["北京大学", "北大"]), ("q3", ["甲"]), (" q4 ", ["乙。"])]]
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}), encoding="utf-8")
    task = get_task("cmrc2018")
    predictions = {"q1": "《红楼梦》", "q2": "北京大学图书馆", "q4": "乙"}   # q3 missing; ids are stripped
    result = task.evaluate(task.read_examples(str(path), False), predictions)
    assert result["f1"] == pytest.approx(100 * (1 + 8 / 11 + 0 + 1) / 4)
    assert result["em"] == pytest.approx(100 * 2 / 4)
    assert (result["total"], result["skipped"]) == (4, 1)


def test_evaluate_cmrc_rejects_question_without_gold_and_nothing_to_score():
    with pytest.raises(UserError, match="q1 has no gold"):
        metrics.evaluate_cmrc([("q1", [])], {"q1": "x"})
    with pytest.raises(UserError, match="no questions"):
        metrics.evaluate_cmrc([], {})


def test_cmrc_trial_excerpt_first_gold_scores_100_and_nothing_scores_0():
    path = data_file("cmrc2018/cmrc2018_trial.excerpt.json")
    with open(path, encoding="utf-8") as f:
        dataset = json.load(f)
    questions = [qa for article in dataset["data"] for paragraph in article["paragraphs"]
                 for qa in paragraph["qas"]]
    task = get_task("cmrc2018")
    examples = task.read_examples(path, False)
    first_gold = {qa["id"].strip(): qa["answers"][0]["text"] for qa in questions}
    count = len(questions)
    assert task.evaluate(examples, first_gold) == {"f1": 100.0, "em": 100.0, "total": count, "skipped": 0}
    assert task.evaluate(examples, {}) == {"f1": 0.0, "em": 0.0, "total": count, "skipped": count}


# -- CJRC -------------------------------------------------------------------------------------------

def test_cjrc_normalize_keeps_lower_cased_letters_and_digits():
    assert metrics.cjrc_normalize(" Hello, 世界! 2019年（上半年） ") == "hello世界2019年上半年"
    assert metrics.cjrc_normalize("Ａ股第①条½") == "ａ股第①条"       # '①'.isdigit(); '½' is neither


def test_cjrc_character_bag_f1_with_repeated_characters():
    # gold {哈:3, 好:1}, prediction {哈:1, 好:2}: 2 in common, P = 2/3, R = 2/4, F1 = 4/7.
    assert metrics.cjrc_scores(["哈哈哈好"], "哈好好") == (pytest.approx(4 / 7), 0)
    assert metrics.cjrc_scores(["甲乙"], "乙甲") == (1.0, 0)              # a bag: order does not matter
    assert metrics.cjrc_scores(["800元"], "800") == (pytest.approx(6 / 7), 0)
    assert metrics.cjrc_scores(["YES"], "yes") == (1.0, 1)
    assert metrics.cjrc_scores(["甲，乙"], "甲乙。") == (1.0, 1)


def test_cjrc_empty_answers():
    assert metrics.cjrc_scores([""], "") == (1.0, 1)
    assert metrics.cjrc_scores([""], "。") == (1.0, 1)       # empty after normalization
    assert metrics.cjrc_scores([""], "有") == (0.0, 0)
    assert metrics.cjrc_scores(["有"], "") == (0.0, 0)
    assert metrics.cjrc_scores([], "") == (1.0, 1)            # no gold answers = one empty gold answer


def test_cjrc_leave_one_out_over_gold_answers():
    # Against "800元": F1 1, EM 1; "生活费800元": F1 8/11; "每月800元": F1 0.8.
    # Leaving out each gold in turn: max(8/11, 0.8) = 0.8, max(1, 0.8) = 1, max(1, 8/11) = 1.
    f1, em = metrics.cjrc_scores(["800元", "生活费800元", "每月800元"], "800元")
    assert f1 == pytest.approx((0.8 + 1 + 1) / 3)
    assert em == pytest.approx(2 / 3)
    assert metrics.cjrc_scores(["甲", "乙"], "甲") == (0.5, 0.5)


def test_evaluate_cjrc_per_domain():
    examples = [("c1", "civil", ["800元"] * 3), ("c2", "civil", [""] * 3), ("c3", "civil", ["YES"] * 3),
                ("k1", "criminal", ["甲乙"] * 3)]
    predictions = {"c1": "800元", "c2": "", "k1": "甲", "other": "x"}   # c3 missing
    result = metrics.evaluate_cjrc(examples, predictions)
    assert result["civil"] == {"f1": pytest.approx(200 / 3), "em": pytest.approx(200 / 3), "total": 3}
    assert result["criminal"] == {"f1": pytest.approx(200 / 3), "em": 0.0, "total": 1}
    assert result["overall"] == {"f1": pytest.approx(100 * (2 + 2 / 3) / 4), "em": 50.0, "total": 4}
    only_civil = metrics.evaluate_cjrc(examples[:1], predictions)
    assert only_civil["criminal"] == {"f1": 0.0, "em": 0.0, "total": 0}


def test_cjrc_dev_file_counts_and_first_gold_bound():
    with open(data_file("cjrc/cjrc_dev.fixture.json"), encoding="utf-8") as f:
        dataset = json.load(f)
    examples = [(qa["id"], story["domain"], [answer["text"] for answer in qa["answers"]])
                for story in dataset["data"] for paragraph in story["paragraphs"] for qa in paragraph["qas"]]
    nothing = metrics.evaluate_cjrc(examples, {})
    assert [nothing[name]["total"] for name in ("civil", "criminal", "overall")] == [6, 5, 11]
    assert nothing["overall"]["f1"] == nothing["overall"]["em"] == 0.0
    # Predicting the first of 3 gold answers scores 1 in the two leave-one-out rounds that keep it: >= 2/3 each.
    first_gold = metrics.evaluate_cjrc(examples, {qid: golds[0] for qid, _, golds in examples})
    for name in ("civil", "criminal", "overall"):
        assert 200 / 3 <= first_gold[name]["em"] <= first_gold[name]["f1"] < 100


def test_evaluate_cjrc_rejects_unknown_domain_and_duplicate_ids():
    with pytest.raises(ValueError, match="c1.*'family'"):
        metrics.evaluate_cjrc([("c1", "family", ["x"])], {})
    with pytest.raises(ValueError, match="c1 appears twice"):
        metrics.evaluate_cjrc([("c1", "civil", ["x"]), ("c1", "civil", ["y"])], {})


# -- accuracy and seeds -----------------------------------------------------------------------------

def test_accuracy_counts_missing_as_wrong():
    gold = {"a": 1, "b": 2, "c": 3, "d": 0}
    assert metrics.accuracy(gold, {"a": 1, "b": 0, "c": 3, "z": 0}) == {"accuracy": 50.0, "total": 4}
    with pytest.raises(ValueError):
        metrics.accuracy({}, {})


def test_aggregate_seeds_and_markdown():
    results = [{"f1": 80.0, "em": 60.0}, {"f1": 82.0, "em": 61.0}, {"f1": 81.5, "em": 65.0}]
    aggregated = metrics.aggregate_seeds(results, ["f1", "em"])
    assert aggregated["f1"] == {"mean": pytest.approx(81.1666667), "max": 82.0, "values": [80.0, 82.0, 81.5]}
    assert aggregated["em"] == {"mean": pytest.approx(62.0), "max": 65.0, "values": [60.0, 61.0, 65.0]}
    assert metrics.results_markdown("cmrc2018", "bert_base", aggregated, ["f1", "em"]) == (
        "**cmrc2018 / bert_base** (3 seeds)\n\n"
        "| metric | mean (max) | per-seed values |\n|---|---|---|\n"
        "| f1 | 81.167 (82.000) | 80.000, 82.000, 81.500 |\n"
        "| em | 62.000 (65.000) | 60.000, 61.000, 65.000 |\n")
    with pytest.raises(ValueError, match="seed #1 has no metric 'em'"):
        metrics.aggregate_seeds([{"em": 1.0}, {"f1": 2.0}], ["em"])
