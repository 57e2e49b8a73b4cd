"""Checkpoint conversion, frozen-graph export and the serving demo, checked against transformers and the run itself.

Random weights in transformers' PyTorch models (BERT, ALBERT google, brightmart ALBERT as the albert_zh PyTorch
port names it, XLNetForQuestionAnswering, the multiple-choice classes of BERT and XLNet) go through
``export.from_pytorch``; the outputs must agree (<= 1e-4) in PyTorch, in the tf_mrc Estimator predict path on the
converted checkpoint, in the frozen .pb and in the SavedModel, the last two loaded by a fresh process that cannot
import tf_mrc. XLNet's span head is compared on its beam: the top-k start / end log-probabilities and positions
and the answer-class logit. XLNet inputs are laid out as its tokenizer packs them: ``A <sep> B <sep> <cls>``,
segment ids 0 / 1 / 2, left padding with segment 3 and mask 0; for span tasks A is the passage, whose tokens and
<cls> are the positions PyTorch's ``p_mask`` leaves open. A tiny model of each family trained in the test is
exported, and the demo must answer exactly what ``--do_predict`` answered.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

try:  # the PyTorch side; the legacy TF 1.13 stack has neither, and runs only the export and demo tests
    import torch
    import transformers
except ImportError:
    torch = transformers = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch and transformers are not installed")

from conftest import ROOT  # noqa: E402
from export import from_pytorch, mapping, to_pb, to_pytorch  # noqa: E402
from tf_mrc.compat import IS_TF1, tf  # noqa: E402
from tf_mrc.modeling.layouts import descriptor  # noqa: E402
from tf_mrc.tasks.base import Task, register  # noqa: E402

from conftest import spm_sentences, train_xlnet_spm  # noqa: E402
from tf_mrc.modeling.config import config_from_json  # noqa: E402
SAMPLES = os.path.join(ROOT, "serving_demo", "samples", "samples.json")
V, H, A, I, E, P, T, B, C = 40, 32, 4, 64, 16, 24, 16, 3, 3
VARIANTS = ("bert", "google", "brightmart")          # span cases of the BERT family
PAD_ID, SEP_ID, CLS_ID = 5, 4, 3                     # XLNet's special symbols
SEG_A, SEG_B, SEG_CLS, SEG_PAD = 0, 1, 2, 3


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
    if "XLNet" in type(model).__name__:
        return torch_run(model, inputs)[0]
    with torch.no_grad():
        out = model(**{"input_ids": torch.tensor(inputs["input_ids"], dtype=torch.long),
                       "attention_mask": torch.tensor(inputs["input_mask"], dtype=torch.long),
                       "token_type_ids": torch.tensor(inputs["segment_ids"], dtype=torch.long)})
    if hasattr(out, "start_logits"):
        return {"start_logits": out.start_logits.numpy(), "end_logits": out.end_logits.numpy()}
    return {"choice_logits": out.logits.numpy()}


def xlnet_config(activation):
    return transformers.XLNetConfig(vocab_size=V, d_model=H, n_layer=2, n_head=A, d_inner=I, ff_activation=activation,
                                    dropout=0.0, summary_last_dropout=0.0)


def row_layout(row):
    """(left padding, length of part A) of packed row ``row``."""
    return 2 * (row % 3), 6 + row % 2


def xlnet_inputs(shape, seed=0):
    """Packed rows ``[pad]* A <sep> B <sep> <cls>`` (see row_layout)."""
    rng = np.random.RandomState(seed)
    rows = int(np.prod(shape[:-1]))
    ids, mask, segments = [], [], []
    for row in range(rows):
        pad, length_a = row_layout(row)
        length_b = T - pad - length_a - 3
        a, b = rng.randint(9, V, size=length_a).tolist(), rng.randint(9, V, size=length_b).tolist()
        ids.append([PAD_ID] * pad + a + [SEP_ID] + b + [SEP_ID, CLS_ID])
        mask.append([0] * pad + [1] * (T - pad))
        segments.append([SEG_PAD] * pad + [SEG_A] * (length_a + 1) + [SEG_B] * (length_b + 1) + [SEG_CLS])
    return {name: np.array(value, np.int32).reshape(shape) for name, value in
            (("input_ids", ids), ("input_mask", mask), ("segment_ids", segments))}


def closed_positions(rows):
    """PyTorch's p_mask [rows, T] for span rows: 1 everywhere but the passage (part A) and <cls>."""
    p_mask = np.ones((rows, T), np.float32)
    for row in range(rows):
        pad, length_a = row_layout(row)
        p_mask[row, pad:pad + length_a] = p_mask[row, T - 1] = 0.0
    return p_mask


def torch_run(model, inputs):
    """(outputs by our output names, the encoder's last hidden states [rows, T, H], the sequence summary or None).
    XLNetForQuestionAnswering's beam is turned into ours: its "log probs" are probabilities (we compare logs), and
    its end entries run end-major (j * start_n_top + i) where XLNet's TF code and ours run start-major."""
    feed = {"input_ids": torch.tensor(inputs["input_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(inputs["input_mask"], dtype=torch.float32),
            "token_type_ids": torch.tensor(inputs["segment_ids"], dtype=torch.long)}
    flat = {name: value.reshape(-1, T) for name, value in feed.items()}
    span = isinstance(model, transformers.XLNetForQuestionAnswering)
    if span:
        feed.update(p_mask=torch.tensor(closed_positions(len(inputs["input_ids"]))),
                    cls_index=torch.full((len(inputs["input_ids"]),), T - 1, dtype=torch.long))
    with torch.no_grad():
        out = model(**feed)
        hidden = model.transformer(**flat).last_hidden_state
        summary = model.sequence_summary(hidden).numpy() if hasattr(model, "sequence_summary") else None
    if not span:
        return {"choice_logits": out.logits.numpy()}, hidden.numpy(), summary
    k = model.config.start_n_top

    def start_major(value):
        return value.numpy().reshape(-1, model.config.end_n_top, k).transpose(0, 2, 1).reshape(len(value), -1)
    outputs = {"start_top_log_probs": np.log(out.start_top_log_probs.numpy()),
               "start_top_index": out.start_top_index.numpy(),
               "end_top_log_probs": np.log(start_major(out.end_top_log_probs)),
               "end_top_index": start_major(out.end_top_index), "cls_logits": out.cls_logits.numpy()}
    return outputs, hidden.numpy(), summary


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
    """(PyTorch weights, config dict, reference model, whether saved as safetensors)."""
    if variant in XLNET_CLASSES:
        class_name, activation, seed = XLNET_CLASSES[variant]
        model = randomize(getattr(transformers, class_name)(xlnet_config(activation)), seed)
        return numpy_state(model), model.config.to_dict(), model, variant == "xlnet_choice"
    if variant == "choice":
        model = randomize(transformers.BertForMultipleChoice(bert_config(hidden_act="gelu_new")), 4)
        return numpy_state(model), model.config.to_dict(), model, False
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


XLNET_CLASSES = {"xlnet": ("XLNetForQuestionAnswering", "gelu", 10),
                 "xlnet_choice": ("XLNetForMultipleChoice", "gelu_new", 11)}
CHOICE_CASES = ("choice", "xlnet_choice")
PARITY_CASES = VARIANTS + ("xlnet",) + CHOICE_CASES


@register
class ChoiceProbe(Task):
    """A stand-in multiple-choice task, so the choice head's export is checked without a task's data."""
    name = "export_test_choice"
    head = "choice"
    num_choices = C


# ---------------------------------------------------------------------------------------------------------------
# Artifacts shared by the parity tests: conversion, Estimator predictions, .pb and SavedModel per variant.

def estimator_outputs(checkpoint, config, task_name, inputs, model_dir):
    """Every output of the Estimator's predict path, stacked over the batch."""
    from tf_mrc.distributed import SingleProcess
    from tf_mrc.estimator import make_estimator, model_fn_builder, predict_outputs
    from tf_mrc.tasks import get_task
    task = get_task(task_name)
    model_fn = model_fn_builder(task, config)
    estimator = make_estimator(model_fn, model_dir, SingleProcess())

    def input_fn(params=None):
        features = dict(inputs, example_index=np.arange(B, dtype=np.int32))
        return tf.data.Dataset.from_tensor_slices(features).batch(2)

    rows = predict_outputs(estimator, input_fn, checkpoint_path=checkpoint)
    return {name: np.stack([row[name] for row in rows]) for name in rows[0] if name != "example_index"}


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


def restored_encoder(checkpoint, config, inputs, head):
    """What ``--init_checkpoint`` does (the model_fn's encoder + head, loaded by name with the report), run on the
    flattened inputs: (report, sequence_output, pooled_output, number of variables in the graph)."""
    from tf_mrc.modeling import build_encoder
    from tf_mrc.modeling.checkpoint import init_from_checkpoint
    from tf_mrc.modeling.heads import build_head
    with tf.Graph().as_default():
        flat = {name: tf.constant(value.reshape(-1, T)) for name, value in inputs.items() if name in to_pb.INPUT_NAMES}
        output = build_encoder(config, flat["input_ids"], flat["input_mask"], flat["segment_ids"], False, "reference")
        build_head(head, output, dict(flat, choice_mask=tf.ones([B, C])), C, config.initializer_range, False,
                   span_head=descriptor(config).span_head)
        report = init_from_checkpoint(checkpoint, log=lambda line: None)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sequence, pooled = sess.run(output)
    return report, sequence, pooled


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("parity"))
    cases, jobs = {}, []
    for variant in PARITY_CASES:
        state, config_dict, model, use_safetensors = pytorch_case(variant)
        shape = (B, C, T) if variant in CHOICE_CASES else (B, T)
        inputs = xlnet_inputs(shape, len(cases)) if variant in XLNET_CLASSES else make_inputs(shape=shape)
        source = save_pytorch(os.path.join(tmp, variant, "pytorch"), state, config_dict, use_safetensors)
        notes = []
        prefix, config_path = from_pytorch.convert(source, os.path.join(source, "config.json"),
                                                   os.path.join(tmp, variant, "tf", "model.ckpt"), log=notes.append)
        config = config_from_json(config_path)
        case = {"state": state, "config": config, "checkpoint": prefix, "notes": notes, "inputs": dict(inputs),
                "torch": torch_outputs(model, inputs), "dir": os.path.join(tmp, variant),
                "head": "choice" if variant in CHOICE_CASES else "span"}
        if variant in XLNET_CLASSES:
            _, case["torch_hidden"], case["torch_summary"] = torch_run(model, inputs)
        if variant in CHOICE_CASES:
            inputs["choice_mask"] = np.ones((B, C), np.int32)
        task = "export_test_choice" if variant in CHOICE_CASES else "cmrc2018"
        case["estimator"] = estimator_outputs(prefix, config, task, inputs, os.path.join(tmp, variant, "estimator"))
        spec = to_pb.ExportSpec(checkpoint=prefix, config=config, task=task,
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


def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@needs_torch
@pytest.mark.parametrize("variant", PARITY_CASES)
def test_same_outputs_in_pytorch_estimator_pb_and_saved_model(parity, variant):
    case = parity[variant]
    assert sorted(case["estimator"]) == sorted(case["torch"])
    for name, expected in case["torch"].items():
        assert max_diff(case["estimator"][name], expected) <= 1e-4, name
        assert max_diff(case["plain"]["pb_" + name], expected) <= 1e-4, name
        assert max_diff(case["plain"]["saved_" + name], expected) <= 1e-4, name
        assert np.abs(expected).max() > 0.3, name  # outputs of real magnitude, not a vacuous match


@needs_torch
def test_xlnet_beam_stays_in_the_passage_and_cls(parity):
    """Every start and end of XLNet's beam is a passage token or <cls>; the beam holds distinct starts."""
    outputs = parity["xlnet"]["estimator"]
    p_mask = closed_positions(len(outputs["start_top_index"]))
    for name in ("start_top_index", "end_top_index"):
        assert not np.take_along_axis(p_mask, outputs[name], 1).any(), name
    assert all(len(set(row)) == len(row) for row in outputs["start_top_index"])


@needs_torch
@pytest.mark.parametrize("variant", CHOICE_CASES)
def test_choice_head_exports_with_documented_inputs(parity, variant):
    sidecar = parity[variant]["sidecar"]
    assert sidecar["inputs"]["input_ids"]["shape"] == [-1, C, T]
    assert sidecar["inputs"]["choice_mask"]["shape"] == [-1, C]
    assert set(sidecar["outputs"]) == {"choice_logits"} and sidecar["num_choices"] == C


@needs_torch
@pytest.mark.parametrize("variant", PARITY_CASES)
def test_converted_checkpoint_loads_with_nothing_missing(parity, variant):
    """What run_finetune.py --init_checkpoint does: the model_fn's graph, loaded by name, with the report: nothing
    missing or unused (XLNet's mask_emb is reported as its pre-training object); XLNet's hidden states (padding
    rows included) and sequence summary match PyTorch's."""
    case = parity[variant]
    report, sequence, pooled = restored_encoder(case["checkpoint"], case["config"], case["inputs"], case["head"])
    pretraining = [mapping.XLNET_MASK_EMB] if variant in XLNET_CLASSES else []
    assert report.missing == [] and report.unused == [] and report.pretraining_heads == pretraining
    stored = len(tf.train.list_variables(case["checkpoint"]))
    assert len(report.loaded) == stored - 1 - len(pretraining)  # all but global_step and pre-training objects
    if "torch_hidden" in case:
        assert max_diff(sequence, case["torch_hidden"]) <= 1e-4
        assert np.abs(case["torch_hidden"]).mean() > 0.1
    if case.get("torch_summary") is not None:
        assert max_diff(pooled, case["torch_summary"]) <= 1e-4


@needs_torch
def test_activation_semantics_carry_across(parity):
    """transformers' 'gelu' is erf, 'gelu_new' tanh: the written TF config must say which, unambiguously (XLNet's
    own keys for XLNet), and reads back to the same model."""
    assert parity["bert"]["config"].activation() == ("gelu", "erf")
    assert parity["google"]["config"].activation() == ("gelu", "tanh")
    written = json.load(open(parity["bert"]["checkpoint"] + ".config.json"))
    assert written["hidden_act"] == "gelu_exact" and written["layout"] == "bert"
    written = json.load(open(parity["google"]["checkpoint"] + ".config.json"))
    assert written["hidden_act"] == "gelu" and written["gelu_convention"] == "tf"
    assert (written["layout"], written["albert_variant"], written["embedding_size"]) == ("albert", "google", E)
    assert json.load(open(parity["brightmart"]["checkpoint"] + ".config.json"))["albert_variant"] == "brightmart"
    qa, choice = parity["xlnet"], parity["xlnet_choice"]
    assert qa["config"].activation() == ("gelu", "erf") and choice["config"].activation() == ("gelu", "tanh")
    assert json.load(open(qa["checkpoint"] + ".config.json")) == {
        "n_token": V, "d_model": H, "n_layer": 2, "n_head": A, "d_head": H // A, "d_inner": I,
        "ff_activation": "gelu_exact", "untie_r": True, "clamp_len": -1, "gelu_convention": "tf", "layout": "xlnet"}
    assert json.load(open(choice["checkpoint"] + ".config.json"))["ff_activation"] == "gelu"
    source = from_pytorch.read_config(os.path.join(qa["dir"], "pytorch", "config.json"))
    for field in ("layout", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_size",
                  "intermediate_size", "untie_r", "clamp_len"):
        assert getattr(qa["config"], field) == getattr(source, field), field


@needs_torch
@pytest.mark.parametrize("variant,what,variable", [("bert", "pooler", "bert/pooler/dense/kernel"),
                                                   ("xlnet", "sequence summary", "model/sequnece_summary/summary/kernel")])
def test_qa_weights_without_pooler_get_a_noted_zero_pooler(parity, variant, what, variable):
    assert "no %s" % what in " ".join(parity[variant]["notes"])
    assert not tf.train.load_checkpoint(parity[variant]["checkpoint"]).get_tensor(variable).any()


@needs_torch
@pytest.mark.parametrize("variant,outputs", [
    ("bert", ["end_logits", "start_logits"]),
    ("xlnet", ["cls_logits", "end_top_index", "end_top_log_probs", "start_top_index", "start_top_log_probs"])])
def test_exported_graph_has_only_core_ops_and_a_sidecar(parity, variant, outputs):
    case = parity[variant]
    pb = os.path.join(case["dir"], "pb", "model.pb")
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(pb, "rb").read())
    ops = {node.op for node in graph_def.node}
    assert to_pb.custom_op_types(graph_def) == []
    assert not ops & {"VariableV2", "VarHandleOp", "ReadVariableOp"}
    assert sorted(n.name for n in graph_def.node if n.op == "Placeholder") == sorted(to_pb.INPUT_NAMES)
    # TF 2.x keeps XLNet's einsums as its core Einsum op; TF 1.13 lowers tf.einsum to MatMul / Transpose.
    assert ("Einsum" in ops) == (variant == "xlnet" and not IS_TF1)
    sidecar = json.load(open(pb + ".json"))
    assert sidecar == case["sidecar"]
    assert {name: info["shape"] for name, info in sidecar["inputs"].items()} == {
        name: [-1, T] for name in ("input_ids", "input_mask", "segment_ids")}
    assert sorted(sidecar["outputs"]) == outputs
    assert (sidecar["task"], sidecar["layout"], sidecar["model_config"]["layout"], sidecar["max_seq_length"]) == (
        "cmrc2018", variant, variant, T)
    from serving_demo.model import FrozenModel
    from tf_mrc.errors import UserError
    with pytest.raises(UserError, match="records no vocabulary: .* or --spm_model"):  # exported without one
        FrozenModel(pb)


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
@pytest.mark.parametrize("variant", VARIANTS)
def test_model_directory_as_init_checkpoint_converts_like_the_command(tmp_path, monkeypatch, variant):
    """A transformers-format directory given to --init_checkpoint (tf_mrc.pretrained) is the conversion command's
    checkpoint, the weight variant (brightmart's albert_zh port included) detected from the weights."""
    from tf_mrc import pretrained
    monkeypatch.setenv("TF_MRC_HOME", str(tmp_path / "home"))
    state, config_dict, _, safetensors = pytorch_case(variant)
    directory = save_pytorch(str(tmp_path / "hf"), state, config_dict, safetensors)
    converted = pretrained.convert_cached(directory, log=lambda line: None)
    direct, direct_config = from_pytorch.convert(directory, os.path.join(directory, "config.json"),
                                                 str(tmp_path / "direct" / "model.ckpt"), log=lambda line: None)
    assert json.load(open(converted.config_file)) == json.load(open(direct_config))
    names = [name for name, _ in tf.train.list_variables(direct)]
    assert names == [name for name, _ in tf.train.list_variables(converted.checkpoint)]
    assert all(np.array_equal(tf.train.load_variable(direct, name), tf.train.load_variable(converted.checkpoint, name))
               for name in names)


@needs_torch
@pytest.mark.parametrize("variant", PARITY_CASES + ("base", "xlnet_base"))
def test_round_trip_is_bitwise_exact(tmp_path, variant):
    if variant == "base":
        model = randomize(transformers.BertModel(bert_config()), 5)
        state, config_dict, use_safetensors = numpy_state(model), model.config.to_dict(), True
    elif variant == "xlnet_base":
        model = randomize(transformers.XLNetModel(xlnet_config("gelu")), 20)
        state, config_dict, use_safetensors = numpy_state(model), model.config.to_dict(), True
    else:
        state, config_dict, _, use_safetensors = pytorch_case(variant)
    back, target = round_trip(tmp_path, state, config_dict, use_safetensors)
    assert sorted(back) == sorted(state)
    for name in state:
        assert back[name].dtype == state[name].dtype and np.array_equal(back[name], state[name]), name
    expected = {"bert": "BertForQuestionAnswering", "google": "AlbertForQuestionAnswering", "brightmart": None,
                "choice": "BertForMultipleChoice", "base": "BertModel", "xlnet": "XLNetForQuestionAnswering",
                "xlnet_choice": "XLNetForMultipleChoice", "xlnet_base": "XLNetModel"}[variant]
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


@needs_torch
def test_pretrained_encoder_leaves_the_summary_to_fine_tuning(tmp_path, capsys):
    """XLNetLMHeadModel (how pre-trained XLNet is published for PyTorch), through both command lines: the LM head
    is skipped, the summary is left out as in published TF checkpoints (the loading report says it starts from
    the initializer), mask_emb is kept and comes back; the SentencePiece model lands where XLNetTokenizer looks."""
    model = randomize(transformers.XLNetLMHeadModel(xlnet_config("gelu")), 21)
    source = save_pytorch(str(tmp_path / "in"), numpy_state(model), model.config.to_dict(), False)
    prefix = str(tmp_path / "tf" / "model.ckpt")
    from_pytorch.main(["--pytorch", source, "--config", os.path.join(source, "config.json"), "--output", prefix,
                       "--layout", "xlnet"])
    assert "skipped 2 pretraining-head tensors (lm_loss.bias, lm_loss.weight)" in capsys.readouterr().out
    stored = dict(tf.train.list_variables(prefix))
    assert mapping.XLNET_MASK_EMB in stored and not any("sequnece_summary" in name for name in stored)
    report, _, _ = restored_encoder(prefix, config_from_json(prefix + ".config.json"), xlnet_inputs((B, C, T)),
                                    "choice")
    assert sorted(report.missing) == ["cls/multiple_choice/output_bias", "cls/multiple_choice/output_weights",
                                      "model/sequnece_summary/summary/bias", "model/sequnece_summary/summary/kernel"]
    assert report.unused == []
    spiece = tmp_path / "spiece.model"
    spiece.write_bytes(b"stand-in")
    out = tmp_path / "out"
    to_pytorch.main(["--checkpoint", prefix, "--config", prefix + ".config.json", "--output", str(out), "--layout",
                     "xlnet", "--spm_model", str(spiece)])
    assert (out / "spiece.model").read_bytes() == b"stand-in"
    base, info = transformers.XLNetModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    for name, value in base.state_dict().items():
        assert torch.equal(value, model.transformer.state_dict()[name]), name


@needs_torch
def test_tied_biases_convert_to_one_variable(tmp_path):
    """untie_r false (one r_w_bias / r_r_bias / r_s_bias for all layers): equal per-layer tensors become the one
    [A, H // A] variable and come back to every layer; per-layer tensors that differ are a one-line error."""
    model = randomize(transformers.XLNetModel(xlnet_config("gelu")), 22)
    state = numpy_state(model)
    for bias in ("r_w_bias", "r_r_bias", "r_s_bias"):
        state["layer.1.rel_attn." + bias] = state["layer.0.rel_attn." + bias].copy()
    config_dict = dict(model.config.to_dict(), untie_r=False)
    back, target = round_trip(tmp_path, state, config_dict)
    assert target == "XLNetModel" and all(np.array_equal(back[name], state[name]) for name in state)
    assert dict(tf.train.list_variables(str(tmp_path / "tf" / "model.ckpt")))["model/transformer/r_w_bias"] == [A, H // A]
    state["layer.1.rel_attn.r_s_bias"] = state["layer.1.rel_attn.r_s_bias"] + 1.0
    source = save_pytorch(str(tmp_path / "bad"), state, config_dict, False)
    with pytest.raises(mapping.ConversionError, match="r_s_bias differs between layers") as err:
        from_pytorch.convert(source, os.path.join(source, "config.json"), str(tmp_path / "bad" / "model.ckpt"),
                             log=lambda line: None)
    assert "\n" not in str(err.value)


@needs_torch
def test_settings_tf_mrc_does_not_compute_are_a_one_line_error(tmp_path):
    model = transformers.XLNetModel(xlnet_config("gelu"))
    source = save_pytorch(str(tmp_path / "in"), numpy_state(model),
                          dict(model.config.to_dict(), summary_type="first"), False)
    with pytest.raises(mapping.ConversionError, match="summary_type 'first' is not supported"):
        from_pytorch.convert(source, os.path.join(source, "config.json"), str(tmp_path / "tf" / "model.ckpt"),
                             log=lambda line: None)


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
def tiny(tiny_demo):
    return tiny_demo  # conftest: shared with the serving tests


@pytest.fixture(scope="module")
def tiny_xlnet(tmp_path_factory):
    from tf_mrc import experiment
    tmp = tmp_path_factory.mktemp("tiny_xlnet")
    samples = json.load(open(SAMPLES, encoding="utf-8"))["data"]
    corpus = spm_sentences() + [p["context"] for a in samples for p in a["paragraphs"]]
    spec = experiment.embedded_default(str(tmp / "run"))
    spec.model, spec.vocab_file, spec.spm_model = "tiny_xlnet", None, train_xlnet_spm(tmp, corpus, 600)
    # 64-token windows: the long sample takes several, and the last windows are left-padded.
    spec.max_seq_length, spec.doc_stride, spec.max_query_length = 64, 16, 16
    spec.predict_file, spec.log_every, spec.num_train_epochs = SAMPLES, 1000, 10.0
    experiment.run(spec, log=lambda line: None)
    pb = str(tmp / "pb" / "model.pb")
    to_pb.main(["--output_dir", spec.output_dir, "--output", pb])
    load = lambda name: json.load(open(os.path.join(spec.output_dir, name), encoding="utf-8"))  # noqa: E731
    return {"spec": spec, "pb": pb, "predictions": load("predictions.json"),
            "dev_predictions": load("dev_predictions.json"), "run_config": load("run_config.json")}


TINY_RUNS = ("tiny", "tiny_xlnet")  # a trained tiny model of each encoder family (fixtures)


def test_flags_export_needs_only_the_spm_model(tiny_xlnet, tmp_path, capsys):
    """``--checkpoint/--config/--layout xlnet/--spm_model`` gives the graph --output_dir gives: the same answers,
    cased by XLNet's convention; a SentencePiece model of another size is a one-line error."""
    from serving_demo.model import FrozenModel
    run = json.load(open(os.path.join(tiny_xlnet["spec"].output_dir, "run_config.json")))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(run["model_config"]))
    flags = ["--checkpoint", tiny_xlnet["spec"].output_dir, "--config", str(config), "--layout", "xlnet",
             "--task", "cmrc2018", "--spm_model", tiny_xlnet["spec"].spm_model]
    for name, value in run["feature_settings"].items():
        flags += ["--" + name, str(value)]
    pb = str(tmp_path / "model.pb")
    to_pb.main(flags + ["--output", pb])
    model = FrozenModel(pb)
    assert model.tokenizer.lower_case is False
    assert model.predict_file(SAMPLES)[0] == tiny_xlnet["predictions"]
    config.write_text(json.dumps(dict(run["model_config"], vocab_size=run["model_config"]["vocab_size"] + 1)))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        to_pb.main(flags + ["--output", str(tmp_path / "other.pb")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "spiece.model has %d entries but the model's vocab_size is %d" % (
        model.tokenizer.vocab_size, model.tokenizer.vocab_size + 1) in lines[0]


@pytest.mark.parametrize("run", TINY_RUNS)
def test_pb_from_a_fused_run_holds_only_core_ops_and_its_vocabulary(request, run):
    """The sidecar records the run's settings and copies the layout's vocabulary file (WordPiece vocab.txt or
    SentencePiece model, the other one null); lower_case stays null: the layout's convention."""
    tiny = request.getfixturevalue(run)
    assert tiny["run_config"]["kernels"] == "fused"
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(tiny["pb"], "rb").read())
    assert to_pb.custom_op_types(graph_def) == []
    sidecar = json.load(open(tiny["pb"] + ".json"))
    assert sidecar["trained_kernels"] == "fused" and sidecar["feature_settings"] == tiny["run_config"][
        "feature_settings"]
    assert sidecar["layout"] == tiny["run_config"]["model_config"]["layout"] and sidecar["lower_case"] is None
    flag = descriptor(sidecar["layout"]).vocabulary_flag
    other = ({"vocab_file", "spm_model"} - {flag}).pop()
    assert sidecar[other] is None
    copied = os.path.join(os.path.dirname(tiny["pb"]), sidecar[flag])
    assert open(copied, "rb").read() == open(getattr(tiny["spec"], flag), "rb").read()


@pytest.mark.skipif(IS_TF1, reason="bf16 compute needs TF 2")
def test_bf16_pb_keeps_the_interface_and_logits_within_tolerance(tiny, tmp_path):
    """--precision=bf16: the encoder's matmuls run in bf16; inputs stay int32, logits float32, and the logits stay
    within 0.05 + 2 % of the fp32 graph's (bf16 keeps 8 significand bits; LayerNorm, softmax and heads in fp32)."""
    from serving_demo.model import FrozenModel
    pb = str(tmp_path / "bf16.pb")
    to_pb.main(["--output_dir", tiny["spec"].output_dir, "--output", pb, "--precision", "bf16"])
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(pb, "rb").read())
    matmuls = {node.name: node.attr["T"].type for node in graph_def.node if node.op in ("MatMul", "BatchMatMulV2")}
    encoder = {dtype for name, dtype in matmuls.items() if "/encoder/" in name}
    assert encoder == {tf.bfloat16.as_datatype_enum} and tf.float32.as_datatype_enum in matmuls.values()  # head
    assert json.load(open(pb + ".json"))["precision"] == "bf16"
    fp32, bf16 = FrozenModel(tiny["pb"]), FrozenModel(pb)
    examples = fp32.task.read_examples(SAMPLES, is_training=False)
    arrays = fp32.task.featurize(examples, fp32.tokenizer, fp32.settings, is_training=False).arrays[:4]
    for expected, actual in zip(fp32.run(arrays), bf16.run(arrays)):
        for name in ("start_logits", "end_logits"):
            assert actual[name].dtype == np.float32
            np.testing.assert_allclose(actual[name], expected[name], atol=0.05, rtol=0.02)
            assert not np.array_equal(actual[name], expected[name])  # bf16 did run


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


@pytest.mark.parametrize("run", TINY_RUNS)
def test_demo_cli_answers_equal_do_predict(request, run, tmp_path):
    """The CLI in a fresh process: the tokenizer from the sidecar, the same windows and decoding as --do_predict."""
    tiny = request.getfixturevalue(run)
    out = tmp_path / "demo.json"
    result = subprocess.run([sys.executable, "-m", "serving_demo", "--pb", tiny["pb"], "--file", SAMPLES,
                             "--output", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads(out.read_text(encoding="utf-8"))
    assert predictions == tiny["predictions"] and all(predictions.values())
    assert "latency:" in result.stdout and "score" in result.stdout


@pytest.mark.parametrize("run", TINY_RUNS)
def test_demo_model_matches_eval_and_reads_long_passages(request, run):
    """The model class on the dev file answers what evaluation answered; the long sample takes several windows
    and answer() on it returns the --do_predict answer."""
    from serving_demo.model import FrozenModel
    tiny = request.getfixturevalue(run)
    model = FrozenModel(tiny["pb"])
    layout = descriptor(tiny["run_config"]["model_config"]["layout"])
    assert type(model.tokenizer).__module__ == "tf_mrc.tokenization." + layout.tokenizer
    assert model.tokenizer.passage_first == layout.passage_first
    predictions, _, _ = model.predict_file(tiny["spec"].dev_file)
    assert predictions == tiny["dev_predictions"]
    _, _, timings = model.predict_file(SAMPLES)
    assert max(timings["windows"]) >= 2  # a sample longer than one window
    long_sample = json.load(open(SAMPLES, encoding="utf-8"))["data"][1]["paragraphs"][0]
    qa = long_sample["qas"][0]
    answer = model.answer([{"passage": long_sample["context"], "question": qa["question"]}])[0]
    assert answer["answer"] == tiny["predictions"][qa["id"]] and answer["windows"] >= 2


KILLED_EXPORT = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from export import to_pb
from tf_mrc import outputs
from tf_mrc.compat import tf


def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


if sys.argv[2] == "sidecar":   # the graph and the vocabulary are written, the sidecar not yet
    write_json = outputs.write_json
    outputs.write_json = lambda path, *a, **k: killed() if path.endswith(".pb.json") else write_json(path, *a, **k)
else:                          # the SavedModel's variables are written, its saved_model.pb not yet
    tf.saved_model.builder.SavedModelBuilder.save = killed
to_pb.main(sys.argv[3:])
"""


@pytest.mark.parametrize("kill_in", ["sidecar", "saved_model"])
def test_an_export_killed_midway_leaves_nothing_usable_half_written_and_reruns(tiny, tmp_path, kill_in):
    """SIGKILL inside an export that overwrites an earlier one: the earlier sidecar does not survive beside the
    new graph (the demo refuses the pair rather than serving a graph with a sidecar written for another), no
    half SavedModel sits under the --saved_model name, and the same command then completes."""
    from export import to_pb
    from serving_demo.model import FrozenModel
    from tf_mrc.errors import UserError
    pb, saved_model = str(tmp_path / "model.pb"), str(tmp_path / "saved_model")
    command = ["--output_dir", tiny["spec"].output_dir, "--output", pb]
    to_pb.main(command)
    command += ["--saved_model", saved_model]
    job = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(ROOT), kill_in] + command, capture_output=True,
                         text=True, timeout=300)
    assert job.returncode == -9, job.stderr[-3000:]
    assert not os.path.exists(saved_model)
    if kill_in == "sidecar":
        with pytest.raises(UserError, match="model.pb.json not found"):
            FrozenModel(pb)
    to_pb.main(command)
    FrozenModel(pb)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        tf.saved_model.loader.load(sess, [tf.saved_model.tag_constants.SERVING], saved_model)
    assert sorted(os.listdir(str(tmp_path))) == ["model.pb", "model.pb.json", "model.vocab.txt", "saved_model"]
