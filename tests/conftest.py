"""Shared test helpers: where the publishers' real samples live (../shared/data, beside the clone); how to
start a Horovod job from a test."""
import os
import pathlib
import shutil
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("TF_MRC_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_file(relative):
    """Path of a real sample under ../shared/data; skips the test when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip("real sample %s not present" % path)
    return path


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
    return str(shared_file("vocab/chinese_bert_vocab.txt"))


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


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def char_tokenizer(directory, chars):
    """A WordPiece tokenizer over SPECIAL_TOKENS then ``chars`` in order, so tests can write ids by hand."""
    from tf_mrc.tokenization import WordPieceTokenizer
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL_TOKENS + list(chars)) + "\n", encoding="utf-8")
    return WordPieceTokenizer(str(vocab))


DEMO_SAMPLES = ROOT / "serving_demo" / "samples" / "samples.json"


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The embedded default run (tiny encoder trained on the shipped passages) exported to a .pb, with its
    --do_predict answers on the demo's samples: built once for the export, serving and browser tests."""
    import json
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
