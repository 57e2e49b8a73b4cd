"""The span-extraction pipeline: tokenizer offsets, readers, windows, decoding, DRCD's character map."""
import json

import numpy as np
import pytest

from conftest import char_tokenizer, data_file
from tf_mrc.tasks import DataError, FeatureSettings, get_task
from tf_mrc.tasks.span import align_answer, max_context_flags
from tf_mrc.tokenization import ChineseConverter, TokenizerError, WordPieceTokenizer

TEXTS = ["我爱Python编程，2018年！", "Héllo   World\tÀB", "“引号”与（括号）—— 破折号", "e-mail: a_b@c.com 3.14",
         "ＡＢＣ全角１２３", "混合English和数字42个", "\u200b零宽\x00控制\ufffd字符"]


def test_wordpiece_matches_transformers_python_tokenizer(chinese_vocab):
    """Same ids as transformers' pure-Python BertTokenizer (google BERT's BasicTokenizer + WordPiece)."""
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizer(chinese_vocab, do_lower_case=True)
    ours = WordPieceTokenizer(chinese_vocab)
    for text in TEXTS:
        assert ours.encode(text)[0] == reference.convert_tokens_to_ids(reference.tokenize(text)), text


def test_offsets_cover_the_original_characters(chinese_vocab):
    tokenizer = WordPieceTokenizer(chinese_vocab)
    ids, offsets = tokenizer.encode("我爱Python编程，Héllo")
    pieces = [tokenizer.vocab[i] for i in ids]
    text = "我爱Python编程，Héllo"
    assert text[offsets[0][0]:offsets[0][1]] == "我" and text[offsets[-1][0]:offsets[-1][1]].startswith("H")
    for (s, e), piece in zip(offsets, pieces):
        assert text[s:e].lower().replace("é", "e") == piece.lstrip("#") or piece == "[UNK]"


def test_pack_bert_layout(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"]) + "\n")
    tokenizer = WordPieceTokenizer(str(vocab))
    packed = tokenizer.pack([[4, 4], [5]], [0, 1], 8)
    assert packed.input_ids == [2, 4, 4, 3, 5, 3, 0, 0]
    assert packed.input_mask == [1, 1, 1, 1, 1, 1, 0, 0]
    assert packed.segment_ids == [0, 0, 0, 0, 1, 1, 0, 0]
    assert packed.part_starts == [1, 4] and packed.cls_index == 0


def test_vocab_errors(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        WordPieceTokenizer(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(TokenizerError, match="not a BERT WordPiece"):
        WordPieceTokenizer(str(bad))


def test_align_answer_searches_near_the_published_offset():
    context = "甲乙丙甲乙丙甲乙丙"
    assert align_answer(context, "甲乙", 3) == 3
    assert align_answer(context, "甲乙", 5) == 6      # off by one: the nearest occurrence
    assert align_answer(context, "丁", 0) == -1


def _write(tmp_path, obj, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def _dataset(context, qas):
    return {"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}


@pytest.mark.parametrize("obj, field", [
    ([1, 2], "data"),
    ({"data": [{"paragraphs": [{"context": "  ", "qas": []}]}]}, "context"),
    ({"data": [{"paragraphs": [{"context": "有文", "qas": [{"id": "q1", "answers": []}]}]}]}, "question"),
    ({"data": [{"paragraphs": [{"context": "有文", "qas": [{"id": "q1", "question": "问",
                                                          "answers": [{"text": 3}]}]}]}]}, "answers"),
])
def test_reader_errors_name_file_record_and_field(tmp_path, obj, field):
    path = _write(tmp_path, obj)
    with pytest.raises(DataError) as err:
        get_task("cmrc2018").read_examples(path, is_training=True)
    message = str(err.value)
    assert path in message and repr(field) in message and "\n" not in message


def _question(qid):
    return {"id": qid, "question": "问", "answers": [{"text": "文", "answer_start": 1}]}


@pytest.mark.parametrize("task_name", ["cmrc2018", "drcd", "cjrc"])
@pytest.mark.parametrize("obj, expected", [
    # 7 and "7" key the same prediction: both records are named
    (_dataset("有文", [_question(7), _question("7")]),
     "record question 7 (data[0].paragraphs[0].qas[1]): field 'id': question id 7 is also the id of record "
     "question 7 (data[0].paragraphs[0].qas[0])"),
    (_dataset("有文", [_question(None)]), "record data[0].paragraphs[0].qas[0]: field 'id': missing"),
    (_dataset("有文", [_question(" ")]), "record data[0].paragraphs[0].qas[0]: field 'id': empty question id"),
    (_dataset(" \u200b\u200d\ufeff\n", [_question("q")]), "record data[0].paragraphs[0]: field 'context': empty passage"),
    ({"data": []}, "record -: field 'data': no questions"),
])
def test_span_readers_refuse_ambiguous_ids_and_empty_input(tmp_path, task_name, obj, expected):
    if task_name == "cjrc":
        obj["data"] = [dict(article, domain="civil") for article in obj["data"]]
    path = _write(tmp_path, obj)
    with pytest.raises(DataError) as err:
        get_task(task_name).read_examples(path, is_training=False)
    assert str(err.value).startswith("%s: %s" % (path, expected))


def test_a_directory_is_not_a_data_file(tmp_path):
    with pytest.raises(DataError, match="a directory, not a file"):
        get_task("cmrc2018").read_examples(str(tmp_path), True)


def test_reader_errors_for_missing_and_broken_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        get_task("cmrc2018").read_examples(str(tmp_path / "nope.json"), True)
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        get_task("cmrc2018").read_examples(str(broken), True)


def test_json_lines_articles_read_like_the_document(tmp_path):
    """One SQuAD article per line reads as the same examples as the ``data`` list; a bad line is named."""
    articles = [{"title": "t%d" % i, "paragraphs": [{"context": "一二三四%d" % i, "qas": [
        {"id": "q%d" % i, "question": "问", "answers": [{"text": "二三", "answer_start": 1}]}]}]} for i in range(3)]
    document = _write(tmp_path, {"version": "1", "data": articles})
    lines = tmp_path / "data.jsonl"
    lines.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n\n" for a in articles), encoding="utf-8")
    task = get_task("cmrc2018")
    assert task.read_examples(str(lines), True) == task.read_examples(document, True)
    lines.write_text(json.dumps(articles[0]) + "\n{\"paragraphs\": [\n", encoding="utf-8")
    stream = task.iter_examples(str(lines), True)
    assert next(stream).qid == "q0"   # read before the bad line is reached
    with pytest.raises(DataError, match="line 2"):
        next(stream)



def test_windows_labels_and_max_context(tmp_path):
    context = "一二三四五六七八九十甲乙丙丁戊己庚辛壬癸"   # 20 tokens
    qas = [{"id": "q", "question": "问", "answers": [{"text": "丙丁", "answer_start": 12}]}]
    tokenizer = char_tokenizer(tmp_path, sorted(set(context + "问")))
    task = get_task("cmrc2018")
    examples = task.read_examples(_write(tmp_path, _dataset(context, qas)), True)
    settings = FeatureSettings(max_seq_length=12, doc_stride=4, max_query_length=4)
    featurized = task.featurize(examples, tokenizer, settings, True)
    # 12 - 1 question token - 3 specials = 8 passage tokens per window, stride 4: starts 0, 4, 8, 12
    assert [s["spans"][0][0] for s in featurized.sidecar] == [0, 4, 8, 12]
    labels = [(f["start_position"], f["end_position"]) for f in featurized.arrays]
    # doc tokens start at position 3 ([CLS] 问 [SEP]); 丙 is token 12
    assert labels == [(0, 0), (0, 0), (3 + 12 - 8, 3 + 13 - 8), (3, 4)]  # windows 0 and 1 end before token 12
    # token 12 has the most context in window starting at 8 (4 left, 3 right) rather than 12 (0 left)
    assert featurized.sidecar[2]["max_context"][4] == 1 and featurized.sidecar[3]["max_context"][0] == 0


def reference_is_max_context(windows, window_index, position):
    """google BERT's _check_is_max_context, as written there: every window is scored for every position."""
    best_score, best_index = None, None
    for index, (start, length) in enumerate(windows):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_index = score, index
    return best_index == window_index


def test_max_context_flags_equal_the_reference_rule_on_random_layouts():
    rng = np.random.RandomState(7)
    layouts = []
    for _ in range(300):
        # sliding windows as featurize makes them (random passage length, window size and stride) ...
        total, size, stride = rng.randint(1, 60), rng.randint(1, 20), rng.randint(1, 20)
        windows, start = [], 0
        while True:
            length = min(total - start, size)
            windows.append((start, length))
            if start + length >= total:
                break
            start += min(length, stride)
        layouts.append(windows)
        # ... and arbitrary ones: unordered, nested, equal-score ties, gaps
        layouts.append([(int(s), int(n)) for s, n in zip(rng.randint(0, 30, 6), rng.randint(1, 12, 6))])
    for windows in layouts:
        expected = [[int(reference_is_max_context(windows, w, start + i)) for i in range(length)]
                    for w, (start, length) in enumerate(windows)]
        assert max_context_flags(windows) == expected, windows


def test_decoding_respects_end_after_start_length_and_passage(tmp_path):
    context = "一二三四五六七八九十"
    qas = [{"id": "q", "question": "三四", "answers": [{"text": "六七", "answer_start": 5}]}]
    tokenizer = char_tokenizer(tmp_path, sorted(set(context)))
    task = get_task("cmrc2018")
    examples = task.read_examples(_write(tmp_path, _dataset(context, qas)), False)
    settings = FeatureSettings(max_seq_length=32, max_answer_length=3)
    featurized = task.featurize(examples, tokenizer, settings, False)
    offset = featurized.sidecar[0]["doc_offset"]

    def decode(*peaks):
        start, end = np.full(32, -100.0), np.full(32, -100.0)
        for which, position, value in peaks:
            (start if which == "s" else end)[position] = value
        return task.postprocess(examples, featurized.sidecar, [{"start_logits": start, "end_logits": end}],
                                settings)

    question = [("s", 1, 100.0), ("e", 1, 100.0)]          # a question token: never part of an answer
    end_before_start = [("s", offset + 8, 50.0), ("e", offset + 2, 50.0)]
    predictions, nbest = decode(*(question + end_before_start + [("s", offset + 5, 10.0), ("e", offset + 6, 10.0)]))
    assert predictions["q"] == "六七"
    too_long = [("s", offset + 0, 30.0), ("e", offset + 9, 30.0)]  # (0, 5) and (4, 9) are 6 tokens > 3
    predictions, _ = decode(*(too_long + [("s", offset + 4, 10.0), ("e", offset + 5, 10.0)]))
    assert predictions["q"] == "五六"
    assert abs(sum(c["probability"] for c in nbest["q"]) - 1.0) < 1e-6


def test_oracle_recovers_answers_across_windows(tmp_path):
    context = "一二三四五六七八九十甲乙丙丁戊己庚辛壬癸"
    qas = [{"id": "q%d" % i, "question": "问", "answers": [{"text": context[i:i + 2], "answer_start": i}]}
           for i in range(0, 18, 3)]
    tokenizer = char_tokenizer(tmp_path, sorted(set(context + "问")))
    task = get_task("cmrc2018")
    examples = task.read_examples(_write(tmp_path, _dataset(context, qas)), False)
    settings = FeatureSettings(max_seq_length=12, doc_stride=3, max_query_length=4)
    featurized = task.featurize(examples, tokenizer, settings, False)
    predictions, _ = task.postprocess(examples, featurized.sidecar, task.oracle_outputs(examples, featurized),
                                      settings)
    assert predictions == {q["id"]: q["answers"][0]["text"] for q in qas}


class _LengthChangingOpenCC:
    """Stands in for an OpenCC phrase table that converts '乾隆' (2 chars) to 'X' (1 char), '髮' to '发'."""

    def convert(self, text):
        return text.replace("乾隆", "X").replace("髮", "发")


def test_converter_maps_length_changing_phrases_back():
    converter = ChineseConverter("t2s")
    converter._cc = _LengthChangingOpenCC()
    original = "清朝乾隆皇帝的頭髮"
    converted, spans = converter.convert(original)
    assert converted == "清朝X皇帝的頭发"
    assert [original[s:e] for s, e in spans] == ["清", "朝", "乾隆", "皇", "帝", "的", "頭", "髮"]


def test_drcd_answers_are_cut_from_the_traditional_passage(tmp_path, chinese_vocab):
    context = "臺灣的國立大學在臺北市，圖書館藏書豐富。"
    qas = [{"id": "d1", "question": "國立大學在哪裡？", "answers": [{"text": "臺北市", "answer_start": 8}]}]
    task = get_task("drcd")
    examples = task.read_examples(_write(tmp_path, _dataset(context, qas)), False)
    assert examples[0].model_context.startswith("台湾的国立大学在台北市")
    settings = FeatureSettings(max_seq_length=64)
    featurized = task.featurize(examples, WordPieceTokenizer(chinese_vocab), settings, False)
    predictions, _ = task.postprocess(examples, featurized.sidecar, task.oracle_outputs(examples, featurized),
                                      settings)
    assert predictions == {"d1": "臺北市"}


@pytest.mark.parametrize("task_name, path", [("cmrc2018", "cmrc2018/cmrc2018_trial.excerpt.json"),
                                             ("drcd", "drcd/DRCD_dev.excerpt.json")])
def test_oracle_on_real_samples(task_name, path, chinese_vocab):
    """Every aligned, not-too-long, token-exact gold answer comes back verbatim through windows + decoding
    (short windows, so that passages span several)."""
    task = get_task(task_name)
    examples = task.read_examples(data_file(path), False)
    settings = FeatureSettings(max_seq_length=128, doc_stride=32)
    featurized = task.featurize(examples, WordPieceTokenizer(chinese_vocab), settings, False)
    predictions, _ = task.postprocess(examples, featurized.sidecar, task.oracle_outputs(examples, featurized),
                                      settings)
    exact = sum(predictions[e.qid] == e.answer_text for e in examples)
    lost = featurized.stats.get("too_long", 0) + featurized.stats.get("inexact", 0) + \
        featurized.stats.get("unaligned", 0) + featurized.stats.get("truncated", 0)
    assert exact >= len(examples) - lost
    assert exact / len(examples) > 0.8
