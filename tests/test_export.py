"""Checkpoint conversion, frozen-graph export and the serving demo, checked against transformers and the run itself.

Random weights in transformers' PyTorch models (BERT, ALBERT google, brightmart ALBERT as the albert_zh PyTorch
port names it) go through ``export.from_pytorch``; the logits must agree (<= 1e-4) in PyTorch, in the tf_mrc
Estimator predict path on the converted checkpoint, in the frozen .pb and in the SavedModel, the last two loaded
by a fresh process that cannot import tf_mrc. The demo must answer exactly what ``--do_predict`` answered.
"""
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

try:  # the PyTorch side; the legacy TF 1.13 stack has neither, and runs only the export and demo tests
    import torch
    import transformers
except ImportError:
    torch = transformers = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch and transformers are not installed")

from export import from_pytorch, mapping, to_pb, to_pytorch  # noqa: E402
from tf_mrc.compat import tf  # noqa: E402
from tf_mrc.modeling.layouts import descriptor  # noqa: E402
from tf_mrc.tasks.base import Task, register  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "serving_demo", "samples", "samples.json")
V, H, A, I, E, P, T, B, C = 40, 32, 4, 64, 16, 24, 16, 3, 3
VARIANTS = ("bert", "google", "brightmart")


# ---------------------------------------------------------------------------------------------------------------
# PyTorch models with random weights, and the state dicts people have.

def randomize(model, seed):
    """Weights far from their init (attention far from uniform, GELU far from linear); LayerNorm gammas ~ 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * 0.2
            parameter.copy_(noise + 1.0 if "LayerNorm.weight" in name or "layer_norm.weight" in name else noise)
    return model.eval()


def bert_config(**overrides):
    fields = dict(vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=A, intermediate_size=I,
                  max_position_embeddings=P, type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    fields.update(overrides)
    return transformers.BertConfig(**fields)


def albert_config():
    return transformers.AlbertConfig(vocab_size=V, embedding_size=E, hidden_size=H, num_hidden_layers=4,
                                     num_hidden_groups=2, inner_group_num=2, num_attention_heads=A,
                                     intermediate_size=I, max_position_embeddings=P, hidden_act="gelu_new",
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def numpy_state(model):
    return {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}


def brightmart_state(seed=3):
    """A brightmart ALBERT as the albert_zh PyTorch port saves it (BERT names, ``word_embeddings_2`` [H, E],
    one ``layer_shared`` block, ``bert.`` prefix), with a QA head."""
    template = randomize(transformers.BertForQuestionAnswering(bert_config(num_hidden_layers=1)), seed)
    rng = np.random.RandomState(seed)
    state = {}
    for name, value in numpy_state(template).items():
        name = name.replace("encoder.layer.0.", "encoder.layer_shared.")
        state[name] = value
    state["bert.embeddings.word_embeddings.weight"] = rng.normal(0, 0.2, (V, E)).astype(np.float32)
    state["bert.embeddings.word_embeddings_2.weight"] = rng.normal(0, 0.2, (H, E)).astype(np.float32)
    state["bert.pooler.dense.weight"] = rng.normal(0, 0.2, (H, H)).astype(np.float32)
    state["bert.pooler.dense.bias"] = rng.normal(0, 0.2, (H,)).astype(np.float32)
    return state


def brightmart_reference(state, layers=3):
    """transformers' BertForQuestionAnswering computing the same function: the word table folded through
    word_embeddings_2, every layer the shared block."""
    model = transformers.BertForQuestionAnswering(bert_config(num_hidden_layers=layers)).eval()
    folded = {}
    for name, value in state.items():
        if "layer_shared" in name:
            for layer in range(layers):
                folded[name.replace("layer_shared", "layer.%d" % layer)] = value
        elif "word_embeddings" not in name and "pooler" not in name:
            folded[name] = value
    folded["bert.embeddings.word_embeddings.weight"] = (state["bert.embeddings.word_embeddings.weight"] @
                                                        state["bert.embeddings.word_embeddings_2.weight"].T)
    missing, unexpected = model.load_state_dict({k: torch.tensor(v) for k, v in folded.items()}, strict=False)
    assert not unexpected and not missing
    return model


def make_inputs(seed=0, shape=(B, T)):
    rng = np.random.RandomState(seed)
    input_ids = rng.randint(1, V, size=shape).astype(np.int32)
    input_mask = np.ones(shape, np.int32)
    input_mask[..., 0, T - 5:] = 0  # padding in the first sequence of every group
    input_ids[input_mask == 0] = 0
    segment_ids = np.zeros(shape, np.int32)
    segment_ids[..., 6:] = 1
    return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids}


def torch_outputs(model, inputs):
    with torch.no_grad():
        out = model(**{"input_ids": torch.tensor(inputs["input_ids"], dtype=torch.long),
                       "attention_mask": torch.tensor(inputs["input_mask"], dtype=torch.long),
                       "token_type_ids": torch.tensor(inputs["segment_ids"], dtype=torch.long)})
    if hasattr(out, "start_logits"):
        return {"start_logits": out.start_logits.numpy(), "end_logits": out.end_logits.numpy()}
    return {"choice_logits": out.logits.numpy()}


def save_pytorch(directory, state, config_dict, use_safetensors):
    """Write weights and config as a user has them: pytorch_model.bin or model.safetensors, and config.json."""
    os.makedirs(directory, exist_ok=True)
    tensors = {name: torch.tensor(value) for name, value in state.items()}
    if use_safetensors:
        from safetensors.torch import save_file
        save_file(tensors, os.path.join(directory, "model.safetensors"))
    else:
        torch.save(tensors, os.path.join(directory, "pytorch_model.bin"))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config_dict, f)
    return directory


def pytorch_case(variant):
    """(directory of PyTorch weights + config, reference model)."""
    if variant == "bert":
        model = randomize(transformers.BertForQuestionAnswering(bert_config()), 1)
        return numpy_state(model), model.config.to_dict(), model, False
    if variant == "google":
        model = randomize(transformers.AlbertForQuestionAnswering(albert_config()), 2)
        return numpy_state(model), model.config.to_dict(), model, True
    state = brightmart_state()
    config = {key: value for key, value in bert_config(num_hidden_layers=3).to_dict().items()
              if key in descriptor("bert").config_fields or key == "hidden_act"}
    config.update(embedding_size=E, share_type="all", ln_type="postln")  # the albert_zh port's config keys
    return state, config, brightmart_reference(state), False


@register
class ChoiceProbe(Task):
    """A stand-in multiple-choice task, so the choice head's export is checked without a task's data."""
    name = "export_test_choice"
    head = "choice"
    num_choices = C


# ---------------------------------------------------------------------------------------------------------------
# Artifacts shared by the parity tests: conversion, Estimator predictions, .pb and SavedModel per variant.

def estimator_outputs(checkpoint, config, inputs, model_dir):
    from tf_mrc.distributed import SingleProcess
    from tf_mrc.estimator import make_estimator, model_fn_builder, predict_outputs
    from tf_mrc.tasks import get_task
    model_fn = model_fn_builder(get_task("cmrc2018"), config)
    estimator = make_estimator(model_fn, model_dir, SingleProcess())

    def input_fn(params=None):
        features = dict(inputs, example_index=np.arange(B, dtype=np.int32))
        return tf.data.Dataset.from_tensor_slices(features).batch(2)

    rows = predict_outputs(estimator, input_fn, checkpoint_path=checkpoint)
    return {name: np.stack([row[name] for row in rows]) for name in ("start_logits", "end_logits")}


PLAIN_TF_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
jobs = json.load(open(sys.argv[1]))
for job in jobs:
    inputs = dict(np.load(job["inputs"]))
    graph = tf.Graph()
    with graph.as_default():
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(open(job["pb"], "rb").read())
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        fetches = {name: graph.get_tensor_by_name(name + ":0") for name in job["outputs"]}
        pb = sess.run(fetches, {graph.get_tensor_by_name(k + ":0"): v for k, v in inputs.items()})
    signature = tf.saved_model.load(job["saved_model"]).signatures["serving_default"]
    served = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    np.savez(job["result"], **{"pb_" + k: v for k, v in pb.items()},
             **{"saved_" + k: served[k].numpy() for k in job["outputs"]})
assert not any(name.startswith("tf_mrc") or name.startswith("export") for name in sys.modules)
print("ok", len(jobs))
"""


def run_plain_tensorflow(jobs, tmp):
    """Run the .pb files and SavedModels in a fresh interpreter with no tf_mrc on its path."""
    path = os.path.join(tmp, "jobs.json")
    with open(path, "w") as f:
        json.dump(jobs, f)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run([sys.executable, "-c", PLAIN_TF_SCRIPT, path], capture_output=True, text=True, cwd=tmp,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [dict(np.load(job["result"])) for job in jobs]


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("parity"))
    cases, jobs = {}, []
    for variant in VARIANTS + ("choice",):
        state, config_dict, model, use_safetensors = (
            pytorch_case(variant) if variant != "choice" else _choice_case())
        inputs = make_inputs(shape=(B, C, T) if variant == "choice" else (B, T))
        source = save_pytorch(os.path.join(tmp, variant, "pytorch"), state, config_dict, use_safetensors)
        notes = []
        prefix, config_path = from_pytorch.convert(source, os.path.join(source, "config.json"),
                                                   os.path.join(tmp, variant, "tf", "model.ckpt"), log=notes.append)
        from tf_mrc.modeling.config import config_from_json
        config = config_from_json(config_path)
        case = {"state": state, "config": config, "checkpoint": prefix, "notes": notes, "inputs": inputs,
                "torch": torch_outputs(model, inputs), "dir": os.path.join(tmp, variant)}
        if variant != "choice":
            case["estimator"] = estimator_outputs(prefix, config, inputs, os.path.join(tmp, variant, "estimator"))
        if variant == "choice":
            inputs["choice_mask"] = np.ones((B, C), np.int32)
        spec = to_pb.ExportSpec(checkpoint=prefix, config=config,
                                task="export_test_choice" if variant == "choice" else "cmrc2018",
                                feature_settings={"max_seq_length": T, "doc_stride": 4, "max_query_length": 4,
                                                  "max_answer_length": 5, "n_best_size": 3})
        pb = os.path.join(tmp, variant, "pb", "model.pb")
        case["sidecar"] = to_pb.export(spec, pb, saved_model=os.path.join(tmp, variant, "saved_model"),
                                       log=lambda line: None)
        np.savez(os.path.join(tmp, variant, "inputs.npz"), **inputs)
        jobs.append({"pb": pb, "saved_model": os.path.join(tmp, variant, "saved_model"),
                     "inputs": os.path.join(tmp, variant, "inputs.npz"), "outputs": sorted(case["torch"]),
                     "result": os.path.join(tmp, variant, "result.npz")})
        cases[variant] = case
    for (variant, case), result in zip(cases.items(), run_plain_tensorflow(jobs, tmp)):
        case["plain"] = result
    return cases


def _choice_case():
    model = randomize(transformers.BertForMultipleChoice(bert_config(hidden_act="gelu_new")), 4)
    return numpy_state(model), model.config.to_dict(), model, False


@needs_torch
@pytest.mark.parametrize("variant", VARIANTS)
def test_same_logits_in_pytorch_estimator_pb_and_saved_model(parity, variant):
    case = parity[variant]
    for name, expected in case["torch"].items():
        assert np.abs(case["estimator"][name] - expected).max() <= 1e-4, name
        assert np.abs(case["plain"]["pb_" + name] - expected).max() <= 1e-4, name
        assert np.abs(case["plain"]["saved_" + name] - expected).max() <= 1e-4, name
    assert np.abs(case["torch"]["start_logits"]).max() > 0.3  # logits of real magnitude, not a vacuous match


@needs_torch
def test_choice_head_exports_with_documented_inputs(parity):
    case = parity["choice"]
    for source in ("pb_", "saved_"):
        assert np.abs(case["plain"][source + "choice_logits"] - case["torch"]["choice_logits"]).max() <= 1e-4
    sidecar = case["sidecar"]
    assert sidecar["inputs"]["input_ids"]["shape"] == [-1, C, T]
    assert sidecar["inputs"]["choice_mask"]["shape"] == [-1, C]
    assert set(sidecar["outputs"]) == {"choice_logits"} and sidecar["num_choices"] == C


@needs_torch
def test_converted_checkpoint_loads_with_nothing_missing(parity):
    """What run_finetune.py --init_checkpoint does: the model_fn's graph, loaded by name, with the report."""
    from tf_mrc.modeling import build_encoder
    from tf_mrc.modeling.checkpoint import init_from_checkpoint
    from tf_mrc.modeling.heads import build_head
    for variant in VARIANTS:
        case = parity[variant]
        with tf.Graph().as_default():
            ids = tf.zeros([2, T], tf.int32)
            output = build_encoder(case["config"], ids, ids, ids, True, "reference")
            build_head("span", output, {}, None, 0.02, False)
            report = init_from_checkpoint(case["checkpoint"], log=lambda line: None)
        assert report.missing == [] and report.unused == [] and report.pretraining_heads == [], variant
        assert len(report.loaded) == len(tf.train.list_variables(case["checkpoint"])) - 1  # all but global_step


@needs_torch
def test_activation_semantics_carry_across(parity):
    """transformers' 'gelu' is erf, 'gelu_new' tanh: the written TF config must say which, unambiguously."""
    assert parity["bert"]["config"].activation() == ("gelu", "erf")
    assert parity["google"]["config"].activation() == ("gelu", "tanh")
    written = json.load(open(parity["bert"]["checkpoint"] + ".config.json"))
    assert written["hidden_act"] == "gelu_exact" and written["layout"] == "bert"
    written = json.load(open(parity["google"]["checkpoint"] + ".config.json"))
    assert written["hidden_act"] == "gelu" and written["gelu_convention"] == "tf"
    assert (written["layout"], written["albert_variant"], written["embedding_size"]) == ("albert", "google", E)
    assert json.load(open(parity["brightmart"]["checkpoint"] + ".config.json"))["albert_variant"] == "brightmart"


@needs_torch
def test_qa_weights_without_pooler_get_a_noted_zero_pooler(parity):
    notes = " ".join(parity["bert"]["notes"])
    assert "no pooler" in notes
    reader = tf.train.load_checkpoint(parity["bert"]["checkpoint"])
    assert not reader.get_tensor("bert/pooler/dense/kernel").any()


@needs_torch
def test_exported_graph_has_only_core_ops_and_a_sidecar(parity):
    case = parity["bert"]
    pb = os.path.join(case["dir"], "pb", "model.pb")
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(pb, "rb").read())
    assert to_pb.custom_op_types(graph_def) == []
    assert not any(node.op in ("VariableV2", "VarHandleOp", "Placeholder") and node.name not in to_pb.INPUT_NAMES
                   for node in graph_def.node)
    sidecar = json.load(open(pb + ".json"))
    assert sidecar == case["sidecar"]
    assert {name: info["shape"] for name, info in sidecar["inputs"].items()} == {
        name: [-1, T] for name in ("input_ids", "input_mask", "segment_ids")}
    assert sorted(sidecar["outputs"]) == ["end_logits", "start_logits"]
    assert (sidecar["task"], sidecar["layout"], sidecar["max_seq_length"]) == ("cmrc2018", "bert", T)


def test_custom_op_types_are_caught():
    graph_def = tf.GraphDef()
    graph_def.node.add(name="x", op="Placeholder")
    graph_def.node.add(name="y", op="BlocksparseMatmul")
    assert to_pb.custom_op_types(graph_def) == ["BlocksparseMatmul"]


# ---------------------------------------------------------------------------------------------------------------
# PyTorch -> TF -> PyTorch, naming variants, errors.

def round_trip(tmp_path, state, config_dict, use_safetensors=False):
    source = save_pytorch(str(tmp_path / "in"), state, config_dict, use_safetensors)
    prefix, config_path = from_pytorch.convert(source, os.path.join(source, "config.json"),
                                               str(tmp_path / "tf" / "model.ckpt"), log=lambda line: None)
    path, target = to_pytorch.convert(prefix, config_path, str(tmp_path / "out"), use_safetensors=use_safetensors,
                                      log=lambda line: None)
    if use_safetensors:
        from safetensors.torch import load_file
        back = load_file(path)
    else:
        back = torch.load(path, map_location="cpu", weights_only=True)
    return {name: value.numpy() for name, value in back.items()}, target


@needs_torch
@pytest.mark.parametrize("variant", VARIANTS + ("choice", "base"))
def test_round_trip_is_bitwise_exact(tmp_path, variant):
    if variant == "choice":
        state, config_dict, _, use_safetensors = _choice_case()
    elif variant == "base":
        model = randomize(transformers.BertModel(bert_config()), 5)
        state, config_dict, use_safetensors = numpy_state(model), model.config.to_dict(), True
    else:
        state, config_dict, _, use_safetensors = pytorch_case(variant)
    back, target = round_trip(tmp_path, state, config_dict, use_safetensors)
    assert sorted(back) == sorted(state)
    for name in state:
        assert back[name].dtype == state[name].dtype and np.array_equal(back[name], state[name]), name
    expected = {"bert": "BertForQuestionAnswering", "google": "AlbertForQuestionAnswering", "brightmart": None,
                "choice": "BertForMultipleChoice", "base": "BertModel"}[variant]
    assert target == expected
    if target:  # transformers loads the written directory into that class with nothing missing or unused
        model_class = getattr(transformers, target)
        _, info = model_class.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info


@needs_torch
def test_old_port_names_convert_like_the_current_ones(tmp_path):
    """pytorch-pretrained-bert era: DataParallel's module., LayerNorm gamma/beta, pretraining heads, buffers."""
    state, config_dict, _, _ = pytorch_case("bert")
    old = {}
    for name, value in state.items():
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        old["module." + name] = value
    old["module.bert.embeddings.position_ids"] = np.arange(P)[None]
    old["module.cls.predictions.bias"] = np.zeros(V, np.float32)
    old["module.cls.seq_relationship.weight"] = np.zeros((2, H), np.float32)
    config_dict = {k: v for k, v in config_dict.items() if k != "model_type"}  # old configs lack it
    values = {}
    for label, weights in (("new", state), ("old", old)):
        source = save_pytorch(str(tmp_path / label), weights, config_dict, False)
        notes = []
        prefix, _ = from_pytorch.convert(source, os.path.join(source, "config.json"),
                                         str(tmp_path / label / "model.ckpt"), log=notes.append)
        values[label] = to_pytorch.read_tf_checkpoint(prefix)
    assert sorted(values["old"]) == sorted(values["new"])
    for name in values["new"]:
        assert np.array_equal(values["old"][name], values["new"][name]), name
    assert any("skipped 2 pretraining-head tensors" in note for note in notes)


def _convert_error(tmp_path, state, config_dict):
    source = save_pytorch(str(tmp_path / "bad"), state, config_dict, False)
    with pytest.raises(mapping.ConversionError) as err:
        from_pytorch.convert(source, os.path.join(source, "config.json"), str(tmp_path / "bad" / "model.ckpt"),
                             log=lambda line: None)
    assert "\n" not in str(err.value)
    return str(err.value)


@needs_torch
def test_unmapped_tensors_are_a_one_line_error(tmp_path):
    state, config_dict, _, _ = pytorch_case("bert")
    state["bert.encoder.layer.0.attention.self.rotary.weight"] = np.zeros((H, H), np.float32)
    message = _convert_error(tmp_path, state, config_dict)
    assert "1 PyTorch tensors have no place" in message and "attention.self.rotary.weight" in message


@needs_torch
def test_more_layers_than_the_config_is_an_error(tmp_path):
    state, config_dict, _, _ = pytorch_case("bert")
    config_dict["num_hidden_layers"] = 1
    message = _convert_error(tmp_path, state, config_dict)
    assert "16 PyTorch tensors have no place in this 1-layer bert model" in message
    assert "bert.encoder.layer.1." in message


@needs_torch
def test_misshaped_tensors_are_a_one_line_error(tmp_path):
    state, config_dict, _, _ = pytorch_case("bert")
    config_dict["intermediate_size"] = I * 2
    message = _convert_error(tmp_path, state, config_dict)
    assert "wrong shape" in message and "intermediate.dense.weight [64, 32]" in message


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        from_pytorch.main(["--pytorch", str(tmp_path / "nothing.bin"), "--config", str(tmp_path / "c.json"),
                           "--output", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert ("nothing.bin" if torch is not None else "needs torch") in lines[0]
    with pytest.raises(SystemExit):
        to_pb.main(["--output", str(tmp_path / "m.pb"), "--output_dir", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "run_config.json" in lines[0]


# ---------------------------------------------------------------------------------------------------------------
# The tiny trained run -> .pb -> the demo, CLI and HTTP; answers equal --do_predict's.

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tf_mrc import experiment
    tmp = tmp_path_factory.mktemp("tiny")
    spec = experiment.embedded_default(str(tmp / "run"))
    spec.predict_file = SAMPLES          # dev: the shipped passages; predict: the demo's samples (a long one too)
    spec.log_every = 1000
    experiment.run(spec, log=lambda line: None)
    pb = str(tmp / "pb" / "model.pb")
    to_pb.main(["--output_dir", spec.output_dir, "--output", pb, "--saved_model", str(tmp / "saved_model")])
    load = lambda name: json.load(open(os.path.join(spec.output_dir, name), encoding="utf-8"))  # noqa: E731
    return {"spec": spec, "pb": pb, "saved_model": str(tmp / "saved_model"), "predictions": load("predictions.json"),
            "dev_predictions": load("dev_predictions.json"), "run_config": load("run_config.json")}


def test_pb_from_a_fused_run_holds_only_core_ops(tiny):
    assert tiny["run_config"]["kernels"] == "fused"
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(tiny["pb"], "rb").read())
    assert to_pb.custom_op_types(graph_def) == []
    sidecar = json.load(open(tiny["pb"] + ".json"))
    assert sidecar["trained_kernels"] == "fused" and sidecar["feature_settings"] == tiny["run_config"][
        "feature_settings"]
    copied = os.path.join(os.path.dirname(tiny["pb"]), sidecar["vocab_file"])
    assert open(copied, "rb").read() == open(tiny["spec"].vocab_file, "rb").read()


def test_saved_model_signature_serves_the_frozen_graph(tiny):
    """The serving_default signature (TF Serving's) computes what the .pb does, through the v1 loader that
    TF 1.13 and 2.x share."""
    from serving_demo.model import FrozenModel
    model = FrozenModel(tiny["pb"])
    examples = model.task.read_examples(SAMPLES, is_training=False)
    arrays = model.task.featurize(examples, model.tokenizer, model.settings, is_training=False).arrays[:4]
    expected = model.run(arrays)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        meta_graph = tf.saved_model.loader.load(sess, [tf.saved_model.tag_constants.SERVING], tiny["saved_model"])
        signature = meta_graph.signature_def["serving_default"]
        assert sorted(signature.inputs) == ["input_ids", "input_mask", "segment_ids"]
        assert sorted(signature.outputs) == ["end_logits", "start_logits"]
        feed = {signature.inputs[name].name: np.array([a[name] for a in arrays], np.int32)
                for name in signature.inputs}
        served = sess.run({name: info.name for name, info in signature.outputs.items()}, feed)
    for name in ("start_logits", "end_logits"):
        assert np.abs(served[name] - np.stack([e[name] for e in expected])).max() <= 1e-5


def test_demo_cli_answers_equal_do_predict(tiny, tmp_path):
    out = tmp_path / "demo.json"
    result = subprocess.run([sys.executable, "-m", "serving_demo", "--pb", tiny["pb"], "--file", SAMPLES,
                             "--output", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(out.read_text(encoding="utf-8")) == tiny["predictions"]
    assert "latency:" in result.stdout and "score" in result.stdout


def test_demo_model_matches_eval_and_reads_long_passages(tiny):
    from serving_demo.model import FrozenModel
    model = FrozenModel(tiny["pb"])
    predictions, _, timings = model.predict_file(tiny["spec"].dev_file)
    assert predictions == tiny["dev_predictions"]
    examples = model.task.read_examples(SAMPLES, is_training=False)
    featurized = model.task.featurize(examples, model.tokenizer, model.settings, is_training=False)
    windows = [record["example_index"] for record in featurized.sidecar]
    assert max(windows.count(i) for i in set(windows)) >= 2  # a sample longer than one window


def _request(url, body=None, timeout=30):
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8")


def test_demo_http(tiny):
    from serving_demo.model import FrozenModel
    from serving_demo.server import make_server
    samples = json.load(open(SAMPLES, encoding="utf-8"))
    paragraph = samples["data"][1]["paragraphs"][0]  # the long one
    server = make_server(FrozenModel(tiny["pb"]), 0, quiet=True)
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = "http://127.0.0.1:%d/" % server.server_address[1]
    try:
        status, page = _request(url)
        assert status == 200 and "<textarea" in page
        qa = paragraph["qas"][0]
        status, body = _request(url, {"passage": paragraph["context"], "question": qa["question"]})
        assert status == 200
        answer = json.loads(body)
        assert answer["answer"] == tiny["predictions"][qa["id"]] and answer["windows"] >= 2
        assert answer["score"] is not None and answer["latency_ms"] > 0
        asked = [{"passage": paragraph["context"], "question": q["question"], "id": q["id"]} for q in paragraph["qas"]]
        status, body = _request(url, asked)
        assert status == 200 and {a["id"]: a["answer"] for a in json.loads(body)} == {
            q["id"]: tiny["predictions"][q["id"]] for q in paragraph["qas"]}
        for bad, fragment in ((b"{not json", "not JSON"), ({"passage": "x"}, "'question'"),
                              ({"passage": " ", "question": "q"}, "empty"), ([], "empty list"),
                              ([{"passage": "x", "question": 3}], "item 0")):
            status, body = _request(url, bad)
            assert status == 400 and fragment in json.loads(body)["error"], (bad, body)
        assert _request(url + "nowhere")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@needs_torch
def test_demo_refuses_non_span_tasks(parity, capsys):
    from serving_demo import __main__ as demo
    with pytest.raises(SystemExit):
        demo.main(["--pb", os.path.join(parity["choice"]["dir"], "pb", "model.pb")])
    assert "the demo answers span tasks" in capsys.readouterr().err

