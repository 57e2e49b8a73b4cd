"""What only the XLNet layout (``--model=xlnet_mid`` / ``tiny_xlnet``) does on every task: its input layout, beam
decoding, SentencePiece spans and model resolution. tiny_xlnet's training runs are in test_tasks_end_to_end.py.

References: XLNet's input layout (``A <sep> B <sep> <cls>``, left padding, segment ids 0/1, <cls> 2, padding 3)
rebuilt here from the task's own parts; the original passages (answers must come back as their exact characters);
the publishers' CMRC 2018 trial excerpt (tests/data) through the audit.
The SentencePiece models are trained inside the tests (XLNet's special symbols on ids 0..8), never committed.
"""
import json

import pytest

from conftest import c3_file, chid_file, cjrc_file, data_file, train_xlnet_spm, write_xlnet_config
from tf_mrc import audit, experiment
from tf_mrc.errors import UserError
from tf_mrc.tasks import FeatureSettings, get_task
from tf_mrc.tasks.span import SpanExample
from tf_mrc.tokenization import load_tokenizer

PASSAGES_FILE = experiment.embedded_default().train_file
PASSAGES = json.load(open(PASSAGES_FILE, encoding="utf-8"))["data"]
UNK, CLS, SEP, PAD, MASK = 0, 3, 4, 5, 6        # XLNet's data_utils.special_symbols
SEG_A, SEG_B, SEG_CLS, SEG_PAD = 0, 1, 2, 3

@pytest.fixture(scope="module")
def tokenizer(xlnet_spm_model):
    return load_tokenizer("xlnet", spm_model=xlnet_spm_model)


def covering_text(tokenizer, context, begin, end):
    """The passage's smallest run of whole pieces around characters [begin, end): what a model can return."""
    around = [(s, e) for s, e in tokenizer.encode(context)[1] if s < e and s < end and e > begin]
    return context[around[0][0]:around[-1][1]]


def oracle_floor(report):
    """The oracle score when exactly the answers decoding cannot return are lost (too long, or a boundary
    inside a piece); the metric's normalisation may still match some of those."""
    other = report.get("other", {})
    lost = other.get("too_long", 0) + other.get("inexact", 0)
    assert lost < 0.25 * report["examples"], report   # the floor says something
    return 100.0 * (report["examples"] - lost) / report["examples"] - 1e-3


def check_layout(ids, segments, mask, parts, type_ids):
    """The sequence is XLNet's ``pad.. part <sep> part <sep> .. <cls>``, rebuilt here from the parts."""
    body, body_segments = [], []
    for part, type_id in zip(parts, type_ids):
        body += list(part) + [SEP]
        body_segments += [type_id] * (len(part) + 1)
    pad = len(ids) - len(body) - 1
    assert pad >= 0
    assert ids == [PAD] * pad + body + [CLS]
    assert segments == [SEG_PAD] * pad + body_segments + [SEG_CLS]
    assert mask == [0] * pad + [1] * (len(body) + 1)


# -- features: every task lays its parts out the XLNet way -----------------------------------------------------
def test_tokenizer_special_ids(tokenizer):
    assert (tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id) == (
        UNK, CLS, SEP, PAD, MASK)


def test_span_windows_follow_the_xlnet_layout(tokenizer):
    """Short windows force several per passage: each is XLNet run_squad's ``P <sep> Q <sep> <cls>``, left-padded
    with <cls> last; the labelled positions hold the answer's characters (the whole pieces around them), and
    windows without the answer point at <cls> (position T - 1)."""
    task = get_task("cmrc2018")
    settings = FeatureSettings(max_seq_length=40, doc_stride=10, max_query_length=12)
    examples = task.read_examples(PASSAGES_FILE, is_training=True)
    featurized = task.featurize(examples, tokenizer, settings, is_training=True)
    windows_per_example, exact = {}, set()
    for arrays, record in zip(featurized.arrays, featurized.sidecar):
        example = examples[record["example_index"]]
        windows_per_example[example.qid] = windows_per_example.get(example.qid, 0) + 1
        query = tokenizer.encode(example.question)[0][:12]
        doc_ids, offsets = tokenizer.encode(example.context)
        first = offsets.index(record["spans"][0])
        window = doc_ids[first:first + len(record["spans"])]
        assert record["spans"] == offsets[first:first + len(window)]
        check_layout(arrays["input_ids"], arrays["segment_ids"], arrays["input_mask"], [window, query], [0, 1])
        assert record["doc_offset"] == 40 - 3 - len(query) - len(window) and record["cls_index"] == 39
        start, end = arrays["start_position"], arrays["end_position"]
        if start == 39:
            assert end == 39
            continue
        begin = record["spans"][start - record["doc_offset"]][0]
        stop = record["spans"][end - record["doc_offset"]][1]
        answer_end = example.answer_start + len(example.answer_text)
        assert example.context[begin:stop] == covering_text(tokenizer, example.context, example.answer_start,
                                                            answer_end)
        if example.context[begin:stop] == example.answer_text:
            exact.add(example.qid)
    assert len(windows_per_example) == len(examples) and max(windows_per_example.values()) > 1
    assert len(exact) > 0.75 * len(examples)


def test_beam_decoding_by_hand():
    """XLNet's beam (2 starts x 2 ends here) decoded as run_squad's write_predictions does, checked by hand:
    a start outside its max-context window, an end before its start and an end past the passage are dropped;
    the score is the sum of log-probabilities; the text is cut from the passage; max_answer_length applies."""
    task = get_task("cmrc2018")
    context = "abcdefghij"
    example = SpanExample(qid="q", question="?", context=context, gold_texts=["abcd"])
    record = {"example_index": 0, "doc_offset": 2, "cls_index": 15, "spans": [(i, i + 1) for i in range(6)],
              "max_context": [1, 0, 1, 1, 1, 1]}
    output = {"start_top_index": [3, 2], "start_top_log_probs": [-0.1, -0.5],
              "end_top_index": [4, 2, 5, 9], "end_top_log_probs": [-0.2, -0.3, -0.4, -0.05],
              "cls_logits": 0.0}
    predictions, nbest = task.postprocess([example], [record], [output], FeatureSettings(max_answer_length=4))
    # start 3 is passage token 1 (not max-context); start 2 is token 0 with ends token 3 (kept), 7 (past the end)
    assert predictions == {"q": "abcd"}
    assert [(c["text"], round(c["score"], 6), c["start"]) for c in nbest["q"]] == [("abcd", -0.9, 0)]
    predictions, _ = task.postprocess([example], [record], [output], FeatureSettings(max_answer_length=3))
    assert predictions == {"q": ""}


def test_drcd_spans_stay_in_the_original_characters(tokenizer, tmp_path):
    """Traditional passages with spaces (bare '▁' pieces): token spans are ordered, non-overlapping, cover every
    non-space original character, and an empty piece stays empty; the oracle returns the original answers."""
    from tf_mrc.tokenization import ChineseConverter
    to_traditional = ChineseConverter("s2t")
    data = []
    for article in PASSAGES[:4]:
        paragraph = article["paragraphs"][0]
        context = to_traditional.convert(paragraph["context"].replace("，", "， ").replace("。", "。 "))[0]
        qas = []
        for qa in paragraph["qas"]:
            text = to_traditional.convert(qa["answers"][0]["text"])[0]
            qas.append({"id": qa["id"], "question": to_traditional.convert(qa["question"])[0],
                        "answers": [{"text": text, "answer_start": context.find(text)}]})
        data.append({"paragraphs": [{"context": context, "qas": qas}]})
    path = tmp_path / "drcd.json"
    path.write_text(json.dumps({"data": data}, ensure_ascii=False), encoding="utf-8")
    task = get_task("drcd")
    examples = task.read_examples(str(path), is_training=False)
    featurized = task.featurize(examples, tokenizer, FeatureSettings(max_seq_length=128), is_training=False)
    empty_pieces = 0
    for record in featurized.sidecar:
        context = examples[record["example_index"]].context
        previous_end, covered = 0, set()
        for start, end in record["spans"]:
            assert previous_end <= start <= end, record["spans"]
            empty_pieces += start == end
            covered.update(range(start, end))
            previous_end = end
        assert covered == {i for i in range(record["spans"][0][0], previous_end) if not context[i].isspace()}
    assert empty_pieces > 0, "no bare '▁' piece: the passages no longer exercise empty spans"
    report = audit.audit(task, str(path), tokenizer, FeatureSettings(max_seq_length=128))
    assert report["unaligned"] == 0 and report["oracle"]["em"] >= oracle_floor(report)


def test_c3_packs_three_parts_the_xlnet_way(tokenizer, tmp_path):
    task = get_task("c3")
    examples = task.read_examples(c3_file(tmp_path / "c3.json"), is_training=False)
    settings = FeatureSettings(max_seq_length=48)
    featurized = task.featurize(examples[:3], tokenizer, settings, is_training=False)
    for example, arrays in zip(examples, featurized.arrays):
        passage, question = tokenizer.encode(example.passage)[0], tokenizer.encode(example.question)[0]
        for row, choice in enumerate(example.choices):
            choice_ids = tokenizer.encode(choice)[0]
            kept = 48 - 4 - len(question) - len(choice_ids)   # the passage, the longest part, is cut
            assert kept < len(passage)
            check_layout(arrays["input_ids"][row], arrays["segment_ids"][row], arrays["input_mask"][row],
                         [passage[:kept], question, choice_ids], [0, 1, 1])
    assert featurized.stats["truncated"] == 3


def test_chid_blank_is_mask_tokens_other_blanks_unknown(tokenizer, tmp_path):
    line = {"content": ["西湖位于浙江省杭州市西部，#idiom000001#，湖中有三座人工岛。#idiom000002#"],
            "candidates": ["山清水秀", "人山人海", "世界遗产"]}
    (tmp_path / "dev.json").write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "dev_answer.json").write_text(json.dumps({"#idiom000001#": 0, "#idiom000002#": 2}))
    task = get_task("chid")
    examples = task.read_examples(str(tmp_path / "dev.json"), is_training=True)
    featurized = task.featurize(examples, tokenizer, FeatureSettings(max_seq_length=64), is_training=True)
    def encode(text):
        return tokenizer.encode(text)[0]

    before, middle = encode("西湖位于浙江省杭州市西部，"), encode("，湖中有三座人工岛。")
    windows = [before + [MASK] * 4 + middle + [UNK] * 4, before + [UNK] * 4 + middle + [MASK] * 4]
    for example, window, arrays in zip(examples, windows, featurized.arrays):
        for row, candidate in enumerate(example.choices):
            check_layout(arrays["input_ids"][row], arrays["segment_ids"][row], arrays["input_mask"][row],
                         [encode(candidate), window], [0, 1])
        assert arrays["choice_mask"] == [1, 1, 1] + [0] * 7 and arrays["label"] == example.label


@pytest.mark.parametrize("task_name, make, max_len, metric", [
    ("cmrc2018", None, 128, "em"),
    ("cjrc", cjrc_file, 128, "em"),
    ("c3", c3_file, 128, "accuracy"),
    ("chid", chid_file, 64, "accuracy"),
])
def test_oracle_is_perfect_on_every_task(tokenizer, tmp_path, task_name, make, max_len, metric):
    """Gold labels pushed through the XLNet features, post-processing and metric: choice tasks score 100, span
    tasks lose only the answers whose boundaries fall inside a piece."""
    data = make(tmp_path / ("%s.json" % task_name)) if make else PASSAGES_FILE
    task = get_task(task_name)
    report = audit.audit(task, data, tokenizer, FeatureSettings(max_seq_length=max_len))
    assert report["examples"] > 0 and report["truncated"] == 0 and report.get("unaligned", 0) == 0
    assert report["oracle"][metric] >= (oracle_floor(report) if task.head != "choice" else 100.0), report


# -- the model: resolve (training runs in test_tasks_end_to_end.py) --------------------------------------------
def xlnet_spec(tmp_path, spm_model, **overrides):
    spec = experiment.embedded_default(str(tmp_path / "out"))
    spec.model, spec.vocab_file, spec.spm_model, spec.log_every = "tiny_xlnet", None, spm_model, 1000
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


def test_resolve_model_for_xlnet(tmp_path, xlnet_spm_model, tokenizer):
    config, resolved, max_len = experiment.resolve_model(xlnet_spec(tmp_path, xlnet_spm_model))
    assert config.layout == "xlnet" and config.vocab_size == tokenizer.vocab_size and max_len == 128
    assert resolved.fingerprint == tokenizer.fingerprint and not resolved.lower_case   # XLNet is cased
    # A config file in XLNet's key names overrides the preset; what it does not say keeps the preset's values.
    config_file = write_xlnet_config(tmp_path / "c.json", tokenizer.vocab_size, d_inner=96)
    spec = xlnet_spec(tmp_path, xlnet_spm_model, config_file=config_file)
    config, _, _ = experiment.resolve_model(spec)
    assert (config.intermediate_size, config.head_size, config.hidden_dropout_prob) == (96, 32, 0.0)
    assert config.initializer_range == 0.1
    spec.config_file = write_xlnet_config(tmp_path / "c.json", tokenizer.vocab_size + 1)
    with pytest.raises(UserError, match="spiece.model has %d entries but the model expects vocab_size %d"
                       % (tokenizer.vocab_size, tokenizer.vocab_size + 1)):
        experiment.resolve_model(spec)
    with pytest.raises(UserError, match="needs --spm_model"):
        experiment.resolve_model(xlnet_spec(tmp_path, None, vocab_file=experiment.embedded_default().vocab_file))
    with pytest.raises(UserError, match="vocab_size 32000"):
        experiment.resolve_model(xlnet_spec(tmp_path, xlnet_spm_model, model="xlnet_mid"))


# -- the publishers' CMRC 2018 trial sample -----------------------------------------------------------------
def test_audit_of_the_cmrc2018_trial_excerpt(tmp_path, capsys):
    """``tf_mrc.audit --model xlnet_mid --spm_model ..`` on the real sample, with a unigram model (XLNet's kind)
    trained on the sample's own passages. Character offsets bring every answer back: the oracle loses exactly
    the answers decoding cannot return (longer than --max_answer_length, or a boundary inside a piece)."""
    data = data_file("cmrc2018/cmrc2018_trial.excerpt.json")
    trial = json.load(open(data, encoding="utf-8"))["data"]
    contexts = [p["context"] for a in trial for p in a["paragraphs"]]
    spm_model = train_xlnet_spm(tmp_path, contexts, 8000, "unigram")

    def run_audit(*extra):
        audit.main(["--task=cmrc2018", "--model=xlnet_mid", "--spm_model", spm_model, "--data", data] + list(extra))
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    report = run_audit()
    assert report["examples"] == len(get_task("cmrc2018").read_examples(data, False)) and report["unaligned"] == 0
    assert report["truncated"] == 0
    assert report["other"]["too_long"] > 0 and report["other"]["inexact"] > 0
    assert report["oracle"]["em"] >= oracle_floor(report), report
    unlimited = run_audit("--max_answer_length", "512")
    assert "too_long" not in unlimited.get("other", {})
    assert unlimited["oracle"]["em"] >= oracle_floor(unlimited), unlimited

    # Answer by answer, independently of the audit's counts: where the passage's pieces start and end exactly
    # on the answer, the oracle returns its exact characters; otherwise the smallest whole-piece span around it.
    task, tokenizer = get_task("cmrc2018"), load_tokenizer("xlnet", spm_model=spm_model)
    settings = FeatureSettings(max_seq_length=512, max_answer_length=512)
    examples = task.read_examples(data, is_training=False)
    featurized = task.featurize(examples, tokenizer, settings, is_training=False)
    predictions, _ = task.postprocess(examples, featurized.sidecar, task.oracle_outputs(examples, featurized),
                                      settings)
    inexact = 0
    for example in examples:
        expected = covering_text(tokenizer, example.context, example.answer_start,
                                 example.answer_start + len(example.answer_text))
        inexact += expected != example.answer_text
        assert predictions[example.qid] == expected, example.qid
    assert inexact == report["other"]["inexact"]
