"""Shared test helpers: the committed test data (tests/data, see its README), the task files made from the
shipped passages, a hand-numbered tokenizer, how to start a Horovod job from a test, GELU in float64."""
import json
import math
import os
import pathlib
import re
import shutil
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"


def data_file(relative):
    """Path (str) of a committed test file under tests/data."""
    path = TEST_DATA / relative
    assert path.is_file(), "%s is part of the clone" % path
    return str(path)



def horovodrun():
    """The horovodrun beside this interpreter, or skip when Horovod is not installed here."""
    pytest.importorskip("horovod.tensorflow", reason="Horovod is not installed (scripts/env_horovod.sh)")
    beside = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    found = beside if os.path.exists(beside) else shutil.which("horovodrun")
    if not found:
        pytest.skip("horovodrun not found")
    return found


def horovod_job_env(**extra):
    """Environment for a horovodrun job started by a test: the repo importable, this process's own launcher
    variables dropped (pytest may itself run under a launcher), mpirun's consent to run as root."""
    from tf_mrc import distributed
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    for name in distributed.LAUNCHER_RANK_VARIABLES:
        env.pop(name, None)
    if os.geteuid() == 0:   # mpirun (the TF 1.13 stack's Horovod) refuses root without these
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


@pytest.fixture
def chinese_vocab():
    """The 21,128-token Chinese BERT vocabulary (google-research/bert, Apache 2.0)."""
    return data_file("vocab/chinese_bert_vocab.txt")


def train_xlnet_spm(folder, sentences, vocab_size, model_type="bpe", **options):
    """Train a SentencePiece model on ``sentences`` with XLNet's spm_train symbols (zihangdai/xlnet README:
    control <cls> <sep> <pad> <mask> <eod>, user-defined <eop> and a few punctuation marks), so <unk> <s> </s>
    <cls> <sep> <pad> <mask> <eod> <eop> land on ids 0..8 as XLNet's data_utils.special_symbols expects of
    every XLNet vocabulary. Returns the .model path (a test-time artifact, never committed)."""
    sentencepiece = pytest.importorskip("sentencepiece")
    folder = pathlib.Path(folder)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    sentencepiece.SentencePieceTrainer.Train(
        input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=vocab_size, model_type=model_type,
        character_coverage=1.0, control_symbols=["<cls>", "<sep>", "<pad>", "<mask>", "<eod>"],
        user_defined_symbols=["<eop>", ".", "(", ")", '"', "-", u"\u2013", u"\u00a3", u"\u20ac"],
        hard_vocab_limit=False, minloglevel=2, **options)
    return str(folder / "spiece.model")


WRITTEN = [
    "西湖的春天非常美丽，游客们沿着苏堤散步。", "杭州是浙江省的省会城市。", "长城是中国古代的军事防御工程。",
    "山海关和嘉峪关是长城的两个重要关口。", "大熊猫主要生活在四川的山区。", "大熊猫每天要吃很多竹子。",
    "李白是唐朝最著名的诗人之一。", "杜甫被后人称为诗圣。", "黄河是中国的第二长河。",
    "黄河流经青海、四川、甘肃等九个省区，最后流入渤海。", "故宫位于北京的中心，是明清两代的皇宫。",
    "中国的茶叶可以分为绿茶、红茶、乌龙茶等六大类。", "龙井茶产于杭州西湖一带。",
    "Python是一种流行的编程语言。", "Guido van Rossum在1991年发布了Python的第一个版本。",
    "Python的名字来自一个英国喜剧节目。", "今天的天气很好，我们去公园散步。", "他在图书馆里读了一本关于历史的书。",
    "这家餐厅的饺子非常好吃。", "我的朋友明天要坐火车去上海。", "老师说考试的时间改到了下午三点。",
    "孩子们在操场上踢足球。", "这座城市有很多古老的建筑。", "博物馆里展出了许多珍贵的文物。",
    "我们应该保护环境，节约用水。", "科学家发现了一种新的植物。", "会议将在星期五上午举行。",
    "机器阅读理解是自然语言处理的重要任务。", "模型需要从文章中找出问题的答案。", "答案总是文章里的一段文字。",
    "世界遗产名录收录了很多中国的景观。", "人工岛是人们在湖中堆土建成的小岛。", "诗人写下了许多关于月亮的诗。",
    "这条河的长度大约是五千多千米。", "那座宫殿的面积有七十多万平方米。", "他每天要睡十多个小时。",
    "她用二十年的时间写完了这本书。", "这个问题的答案是什么？", "请问这座桥是哪一年建成的？",
    "谁是这首诗的作者？",
]


def spm_sentences():
    """A corpus for test SentencePiece models: the sentences written above, the shipped passages clause by clause,
    and their questions with answers."""
    from tf_mrc import experiment
    sentences = list(WRITTEN)
    with open(experiment.embedded_default().train_file, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    for article in articles:
        for paragraph in article["paragraphs"]:
            sentences.extend(clause for clause in re.split(r"(?<=[。，；！？])", paragraph["context"]) if clause)
            for qa in paragraph["qas"]:
                sentences.append("问：%s 答：%s。" % (qa["question"], qa["answers"][0]["text"]))
    return sentences


@pytest.fixture(scope="session")
def xlnet_spm_model(tmp_path_factory):
    """An XLNet SentencePiece model (BPE, 600 pieces) trained on ``spm_sentences()``: tiny_xlnet's vocabulary."""
    return train_xlnet_spm(tmp_path_factory.mktemp("spm"), spm_sentences(), 600)


def write_xlnet_config(path, n_token, **changes):
    """A config in XLNet's own key names (xlnet_config.json), at tiny_xlnet's architecture."""
    config = {"n_layer": 2, "d_model": 64, "n_head": 2, "d_head": 32, "d_inner": 128, "ff_activation": "gelu",
              "untie_r": True, "n_token": n_token}
    config.update(changes)
    path.write_text(json.dumps(config))
    return str(path)


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def char_tokenizer(directory, chars):
    """A WordPiece tokenizer over SPECIAL_TOKENS then ``chars`` in order, so tests can write ids by hand
    (``sorted(set(text))`` gives one for every character of ``text``)."""
    from tf_mrc.tokenization import WordPieceTokenizer
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL_TOKENS + list(chars)) + "\n", encoding="utf-8")
    return WordPieceTokenizer(str(vocab))


DEMO_SAMPLES = ROOT / "serving_demo" / "samples" / "samples.json"


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The embedded default run (tiny encoder trained on the shipped passages) exported to a .pb, with its
    --do_predict answers on the demo's samples: built once for the export, serving and browser tests."""
    from export import to_pb
    from tf_mrc import experiment
    tmp = tmp_path_factory.mktemp("tiny_demo")
    spec = experiment.embedded_default(str(tmp / "run"))
    spec.predict_file = str(DEMO_SAMPLES)  # dev: the shipped passages; predict: the demo's samples (a long one too)
    spec.log_every = 1000
    spec.eval_every_epochs = 0             # no best/: the .pb and both predictions come from the last checkpoint
    experiment.run(spec, log=lambda line: None)
    pb = str(tmp / "pb" / "model.pb")
    to_pb.main(["--output_dir", spec.output_dir, "--output", pb, "--saved_model", str(tmp / "saved_model")])
    load = lambda name: json.load(open(os.path.join(spec.output_dir, name), encoding="utf-8"))  # noqa: E731
    return {"spec": spec, "pb": pb, "saved_model": str(tmp / "saved_model"), "predictions": load("predictions.json"),
            "dev_predictions": load("dev_predictions.json"), "run_config": load("run_config.json")}


def random_pb(directory, task, max_seq_length=64, task_options=None):
    """A .pb of the tiny encoder with ``task``'s head and random weights (initializer range 0.2, so the class
    and choice probabilities differ clearly), with the tiny vocabulary: the demo's plumbing for every task
    without a training run."""
    import dataclasses
    from bench.bench_serving import export_random_model
    from tf_mrc.presets import model_preset
    vocab = ROOT / "tf_mrc" / "resources" / "tiny" / "vocab.txt"
    config = dataclasses.replace(model_preset("tiny").config, initializer_range=0.2,
                                 vocab_size=len(vocab.read_text(encoding="utf-8").splitlines()))
    return export_random_model(str(directory), task, config, {
        "max_seq_length": max_seq_length, "doc_stride": 32, "max_query_length": 32, "max_answer_length": 10,
        "n_best_size": 5}, str(vocab), task_options)


# -- task files made from the shipped passages (tf_mrc/resources/tiny/passages.json) ----------------------------
TINY_PASSAGES_FILE = ROOT / "tf_mrc" / "resources" / "tiny" / "passages.json"
TINY_PASSAGES = json.loads(TINY_PASSAGES_FILE.read_text(encoding="utf-8"))["data"]


def _tiny_questions():
    for article in TINY_PASSAGES:
        paragraph = article["paragraphs"][0]
        for qa in paragraph["qas"]:
            yield paragraph["context"], qa


def cjrc_file(path):
    """CJRC-shaped data: the shipped span questions plus YES / NO / unknown ones, civil and criminal."""
    data = []
    for index, article in enumerate(TINY_PASSAGES):
        paragraph = article["paragraphs"][0]
        qas = [dict(qa, is_impossible="false") for qa in paragraph["qas"]]
        qas.append({"id": "%s-yes" % article["title"], "question": "这段文字是中文吗？", "is_impossible": "false",
                    "answers": [{"text": "YES", "answer_start": -1}]})
        qas.append({"id": "%s-no" % article["title"], "question": "这段文字是英文吗？", "is_impossible": "false",
                    "answers": [{"text": "NO", "answer_start": -1}]})
        qas.append({"id": "%s-unk" % article["title"], "question": "作者是谁？", "is_impossible": "true",
                    "answers": []})
        data.append({"domain": "civil" if index % 2 else "criminal",
                     "paragraphs": [{"context": paragraph["context"], "casename": article["title"], "qas": qas}]})
    path.write_text(json.dumps({"version": "1.0", "data": data}, ensure_ascii=False), encoding="utf-8")
    return str(path)


def c3_file(path):
    """C3-shaped documents: each question's choices are its answer and answers to other questions."""
    answers = [qa["answers"][0]["text"] for _, qa in _tiny_questions()]
    documents = []
    for index, (context, qa) in enumerate(_tiny_questions()):
        gold = qa["answers"][0]["text"]
        distractors = [a for a in answers if a != gold][index % 5:index % 5 + 2 + index % 2]
        choices = sorted([gold] + distractors)
        documents.append([[context], [{"question": qa["question"], "choice": choices, "answer": gold}],
                          "doc-%d" % index])
    path.write_text(json.dumps(documents, ensure_ascii=False), encoding="utf-8")
    return str(path)


def chid_file(path):
    """FewCLUE-shaped cloze lines, one per shipped question: the four characters where its answer starts are the
    blank; the six other candidates are four-character pieces that start no answer (so a tiny model can tell the
    gold ones apart after a few epochs, as C3's fixture lets it)."""
    spans = [(context, context.find(qa["answers"][0]["text"])) for context, qa in _tiny_questions()]
    spans = [(context, start, context[start:start + 4]) for context, start in spans
             if len(context[start:start + 4].strip()) == 4]
    golds = set(text for _, _, text in spans)
    pieces = sorted(set(context[i:i + 4] for context, _, _ in spans for i in range(0, len(context) - 4, 4)) - golds)
    lines = []
    for index, (context, start, text) in enumerate(spans):
        candidates = sorted([text] + [pieces[(index * 6 + step) % len(pieces)] for step in range(6)])
        content = context[:start] + "#idiom#" + context[start + 4:]
        lines.append(json.dumps({"id": index, "candidates": candidates, "content": content,
                                 "answer": candidates.index(text)}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def numpy_gelu(x, form):
    """GELU and its derivative in float64, from the published definitions."""
    if form == "tanh":
        c = math.sqrt(2.0 / math.pi)
        t = np.tanh(c * (x + 0.044715 * x ** 3))
        return 0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)
    if form == "erf":
        from scipy.special import erf
        cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
        return x * cdf, cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    s = 1.0 / (1.0 + np.exp(-1.702 * x))
    return x * s, s + 1.702 * x * s * (1.0 - s)
