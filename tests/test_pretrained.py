"""--init_checkpoint given a transformers model directory: converted once, cached by content, and the
directory's config and vocabulary used as the defaults."""
import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tf_mrc import experiment, pretrained  # noqa: E402
from tf_mrc.compat import tf  # noqa: E402
from tf_mrc.errors import UserError  # noqa: E402

from conftest import train_xlnet_spm  # noqa: E402

TINY = os.path.join(experiment.RESOURCES, "tiny")
VOCAB = os.path.join(TINY, "vocab.txt")
VOCAB_SIZE = sum(1 for line in open(VOCAB, encoding="utf-8") if line.strip())


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_MRC_HOME", str(tmp_path / "home"))


def tiny_bert():
    """transformers' model with the `tiny` preset's shape, so a run with --model=tiny can load it."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=128)
    return transformers.BertForQuestionAnswering(config).eval()


def albert():
    torch.manual_seed(1)
    return transformers.AlbertForQuestionAnswering(transformers.AlbertConfig(
        vocab_size=VOCAB_SIZE, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64)).eval()


def save(model, directory, safetensors, vocab=VOCAB):
    model.save_pretrained(str(directory), safe_serialization=safetensors)
    if vocab:
        shutil.copy(vocab, os.path.join(str(directory), os.path.basename(vocab)))
    return str(directory)


def run_graph(pb_path, inputs):
    graph_def = tf.GraphDef()
    with open(pb_path, "rb") as f:
        graph_def.ParseFromString(f.read())
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        with tf.Session(graph=graph) as session:
            return session.run("start_logits:0", {name + ":0": value for name, value in inputs.items()})


def checkpoint_values(prefix):
    return {name: tf.train.load_variable(prefix, name) for name, _ in tf.train.list_variables(prefix)}


@pytest.mark.parametrize("safetensors", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize("make", [tiny_bert, albert], ids=["bert", "albert"])
def test_directory_converts_once_like_the_conversion_command(tmp_path, make, safetensors):
    from export import from_pytorch
    model = make()
    directory = save(model, tmp_path / "hf", safetensors)
    lines = []
    converted = pretrained.convert_cached(directory, log=lines.append)
    assert converted.vocab_file == os.path.join(directory, "vocab.txt") and converted.spm_model is None
    direct, _ = from_pytorch.convert(directory, os.path.join(directory, "config.json"), str(tmp_path / "direct/m.ckpt"),
                                     log=lambda line: None)
    got, want = checkpoint_values(converted.checkpoint), checkpoint_values(direct)
    assert sorted(got) == sorted(want)
    assert all(np.array_equal(got[name], want[name]) for name in want)
    assert any("converted" in line for line in lines)
    stamp = os.path.getmtime(converted.checkpoint + ".index")
    again = pretrained.convert_cached(directory, log=lines.append)
    assert again == converted and os.path.getmtime(converted.checkpoint + ".index") == stamp
    assert "using the cached conversion" in lines[-1]


def test_a_weights_file_beside_its_config_and_a_changed_file_converts_again(tmp_path):
    model = tiny_bert()
    directory = save(model, tmp_path / "hf", safetensors=True)
    first = pretrained.convert_cached(os.path.join(directory, "model.safetensors"), log=lambda line: None)
    with torch.no_grad():
        model.qa_outputs.bias.add_(1.0)
    save(model, directory, safetensors=True)
    second = pretrained.convert_cached(directory, log=lambda line: None)
    assert first.checkpoint != second.checkpoint
    assert np.allclose(tf.train.load_variable(second.checkpoint, "cls/squad/output_bias"),
                       tf.train.load_variable(first.checkpoint, "cls/squad/output_bias") + 1.0)


def test_xlnet_directory_brings_its_sentencepiece_model(tmp_path):
    (tmp_path / "spm").mkdir()
    spm = train_xlnet_spm(tmp_path / "spm", ["今天天气很好。", "北京是中国的首都。", "我们去公园散步。"] * 20, 60)
    torch.manual_seed(2)
    model = transformers.XLNetForQuestionAnswering(transformers.XLNetConfig(
        vocab_size=60, d_model=32, n_layer=2, n_head=4, d_inner=64)).eval()
    directory = save(model, tmp_path / "hf", safetensors=True, vocab=spm)
    converted = pretrained.convert_cached(directory, log=lambda line: None)
    assert converted.spm_model == os.path.join(directory, "spiece.model") and converted.vocab_file is None
    assert json.load(open(converted.config_file))["d_model"] == 32


def test_a_config_without_weights_is_a_one_line_error_and_a_plain_directory_is_not_a_model(tmp_path):
    directory = tmp_path / "dir"
    directory.mkdir()
    assert pretrained.convert_cached(str(directory)) is None   # TF checkpoints' directory: its latest is meant
    (directory / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no weights"):
        pretrained.convert_cached(str(directory))


def test_run_reads_the_directory_as_it_reads_the_converted_checkpoint(tmp_path):
    """A predict-only run from the directory answers exactly what a run from the converted checkpoint with its
    config and vocabulary given by hand answers."""
    directory = save(tiny_bert(), tmp_path / "hf", safetensors=True)
    passages = os.path.join(TINY, "passages.json")
    common = dict(task="cmrc2018", model="tiny", predict_file=passages, do_predict=True, max_seq_length=128,
                  doc_stride=32, max_query_length=32)
    lines = []
    experiment.run(experiment.RunSpec(output_dir=str(tmp_path / "from_dir"), init_checkpoint=directory, **common),
                   log=lines.append)
    converted = pretrained.convert_cached(directory, log=lambda line: None)
    experiment.run(experiment.RunSpec(output_dir=str(tmp_path / "by_hand"), init_checkpoint=converted.checkpoint,
                                      config_file=converted.config_file, vocab_file=VOCAB, **common),
                   log=lambda line: None)
    read = [json.load(open(tmp_path / name / "nbest_predictions.json")) for name in ("from_dir", "by_hand")]
    assert read[0] == read[1]
    assert any("--vocab_file defaults to" in line for line in lines)


def test_export_reads_the_directory_as_it_reads_the_converted_checkpoint(tmp_path):
    """export.to_pb --checkpoint HF_DIR writes the graph that the converted checkpoint, its config and the
    directory's vocabulary given by hand give."""
    from export import to_pb
    directory = save(tiny_bert(), tmp_path / "hf", safetensors=True)
    common = ["--task", "cmrc2018", "--max_seq_length", "32"]
    to_pb.main(["--checkpoint", directory, "--output", str(tmp_path / "dir.pb")] + common)
    converted = pretrained.convert_cached(directory, log=lambda line: None)
    to_pb.main(["--checkpoint", converted.checkpoint, "--config", converted.config_file, "--vocab_file", VOCAB,
                "--output", str(tmp_path / "hand.pb")] + common)
    inputs = {"input_ids": np.random.RandomState(0).randint(0, VOCAB_SIZE, (2, 32)).astype(np.int32),
              "input_mask": np.ones((2, 32), np.int32), "segment_ids": np.zeros((2, 32), np.int32)}
    logits = [run_graph(str(tmp_path / name), inputs) for name in ("dir.pb", "hand.pb")]
    assert np.array_equal(logits[0], logits[1]) and np.abs(logits[0]).max() > 0
    copied = tmp_path / json.load(open(str(tmp_path / "dir.pb.json")))["vocab_file"]
    assert copied.read_text(encoding="utf-8") == open(VOCAB, encoding="utf-8").read()
