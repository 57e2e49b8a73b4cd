"""XLNet through conversion, export and the demo, checked against transformers and the run itself.

Random weights in transformers' XLNetForQuestionAnswering and XLNetForMultipleChoice go through
``export.from_pytorch --layout xlnet``; hidden states, the sequence summary, the choice logits and the span head's
beam (top-k start / end log-probabilities and positions, the answer-class logit) must agree (<= 1e-4) with
PyTorch in the tf_mrc graph restored from the converted checkpoint, in the Estimator predict path and in the
frozen .pb and SavedModel (loaded by a fresh process that cannot import tf_mrc). Inputs are laid out as XLNet's
tokenizer packs them: ``A <sep> B <sep> <cls>``, segment ids 0 / 1 / 2, left padding with segment 3 and mask 0;
for span tasks A is the passage, whose tokens and <cls> are the positions PyTorch's ``p_mask`` leaves open.
A tiny XLNet trained in the test (SentencePiece model trained in the test too) is exported, and the demo must
answer exactly what ``--do_predict`` answered.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import train_xlnet_spm
from test_export import (ROOT, SAMPLES, needs_torch, numpy_state, randomize, round_trip, run_plain_tensorflow,
                         save_pytorch, torch, transformers)
from export import from_pytorch, mapping, to_pb, to_pytorch
from tf_mrc.compat import IS_TF1, tf
from tf_mrc.modeling.config import config_from_json

V, H, N, D, I, L, T, B, C = 40, 32, 4, 8, 64, 2, 16, 3, 4  # C: C3's four choices
PAD_ID, SEP_ID, CLS_ID = 5, 4, 3                           # XLNet's special symbols
SEG_A, SEG_B, SEG_CLS, SEG_PAD = 0, 1, 2, 3


def xlnet_config(activation):
    return transformers.XLNetConfig(vocab_size=V, d_model=H, n_layer=L, n_head=N, d_inner=I, ff_activation=activation,
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


def estimator_outputs(checkpoint, config, task_name, inputs, model_dir):
    from tf_mrc.distributed import SingleProcess
    from tf_mrc.estimator import make_estimator, model_fn_builder, predict_outputs
    from tf_mrc.tasks import get_task
    task = get_task(task_name)
    model_fn = model_fn_builder(task, config, num_choices=getattr(task, "num_choices", None))
    estimator = make_estimator(model_fn, model_dir, SingleProcess())

    def input_fn(params=None):
        features = dict(inputs, example_index=np.arange(B, dtype=np.int32))
        return tf.data.Dataset.from_tensor_slices(features).batch(2)

    rows = predict_outputs(estimator, input_fn, checkpoint_path=checkpoint)
    return {name: np.stack([row[name] for row in rows]) for name in rows[0] if name != "example_index"}


def restored_encoder(checkpoint, config, inputs, head):
    """What ``--init_checkpoint`` does (the model_fn's encoder + head, loaded by name with the report), run on the
    flattened inputs: (report, sequence_output, pooled_output)."""
    from tf_mrc.modeling import build_encoder
    from tf_mrc.modeling.checkpoint import init_from_checkpoint
    from tf_mrc.modeling.heads import build_head
    with tf.Graph().as_default():
        flat = {name: tf.constant(value.reshape(-1, T)) for name, value in inputs.items() if name in to_pb.INPUT_NAMES}
        output = build_encoder(config, flat["input_ids"], flat["input_mask"], flat["segment_ids"], False, "reference")
        build_head(head, output, dict(flat, choice_mask=tf.ones([B, C])), C, config.initializer_range, False,
                   span_head="xlnet")
        report = init_from_checkpoint(checkpoint, log=lambda line: None)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sequence, pooled = sess.run(output)
    return report, sequence, pooled


CASES = {"qa": ("XLNetForQuestionAnswering", "gelu", "cmrc2018", (B, T), False),
         "choice": ("XLNetForMultipleChoice", "gelu_new", "c3", (B, C, T), True)}


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("xlnet_parity"))
    cases, jobs = {}, []
    for seed, (kind, (class_name, activation, task, shape, use_safetensors)) in enumerate(sorted(CASES.items())):
        model = randomize(getattr(transformers, class_name)(xlnet_config(activation)), 10 + seed)
        state = numpy_state(model)
        inputs = xlnet_inputs(shape, seed)
        directory = os.path.join(tmp, kind)
        source = save_pytorch(os.path.join(directory, "pytorch"), state, model.config.to_dict(), use_safetensors)
        notes = []
        prefix, config_path = from_pytorch.convert(source, os.path.join(source, "config.json"),
                                                   os.path.join(directory, "tf", "model.ckpt"), log=notes.append)
        config = config_from_json(config_path)
        logits, hidden, summary = torch_run(model, inputs)
        feeds = dict(inputs, choice_mask=np.ones((B, C), np.int32)) if kind == "choice" else inputs
        case = {"state": state, "config": config, "checkpoint": prefix, "notes": notes, "inputs": inputs,
                "torch": logits, "torch_hidden": hidden, "torch_summary": summary, "dir": directory, "task": task,
                "estimator": estimator_outputs(prefix, config, task, feeds, os.path.join(directory, "estimator"))}
        spec = to_pb.ExportSpec(checkpoint=prefix, config=config, task=task,
                                feature_settings={"max_seq_length": T, "doc_stride": 4, "max_query_length": 4,
                                                  "max_answer_length": 5, "n_best_size": 3})
        pb = os.path.join(directory, "pb", "model.pb")
        case["sidecar"] = to_pb.export(spec, pb, saved_model=os.path.join(directory, "saved_model"),
                                       log=lambda line: None)
        np.savez(os.path.join(directory, "inputs.npz"), **feeds)
        jobs.append({"pb": pb, "saved_model": os.path.join(directory, "saved_model"),
                     "inputs": os.path.join(directory, "inputs.npz"), "outputs": sorted(logits),
                     "result": os.path.join(directory, "result.npz")})
        cases[kind] = case
    for case, result in zip(cases.values(), run_plain_tensorflow(jobs, tmp)):
        case["plain"] = result
    return cases


def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@needs_torch
@pytest.mark.parametrize("kind", sorted(CASES))
def test_same_logits_in_pytorch_estimator_pb_and_saved_model(parity, kind):
    case = parity[kind]
    assert sorted(case["estimator"]) == sorted(case["torch"])
    for name, expected in case["torch"].items():
        assert max_diff(case["estimator"][name], expected) <= 1e-4, name
        assert max_diff(case["plain"]["pb_" + name], expected) <= 1e-4, name
        assert max_diff(case["plain"]["saved_" + name], expected) <= 1e-4, name
        assert np.abs(expected).max() > 0.3  # logits of real magnitude, not a vacuous match


@needs_torch
def test_beam_stays_in_the_passage_and_cls(parity):
    """Every start and end of the beam is a passage token or <cls>; the beam holds several distinct starts."""
    outputs, rows = parity["qa"]["torch"], len(parity["qa"]["inputs"]["input_ids"])
    p_mask = closed_positions(rows)
    for name in ("start_top_index", "end_top_index"):
        assert not np.take_along_axis(p_mask, parity["qa"]["estimator"][name], 1).any(), name
    assert all(len(set(row)) == len(row) for row in outputs["start_top_index"])


@needs_torch
@pytest.mark.parametrize("kind", sorted(CASES))
def test_converted_checkpoint_restores_completely_and_computes_the_same_states(parity, kind):
    """--init_checkpoint on the converted weights: nothing missing or unused (mask_emb is reported as XLNet's
    pre-training object), and the encoder's hidden states - padding rows included - and summary match PyTorch."""
    case = parity[kind]
    head = "choice" if kind == "choice" else "span"
    report, sequence, pooled = restored_encoder(case["checkpoint"], case["config"], case["inputs"], head)
    assert report.missing == [] and report.unused == []
    assert report.pretraining_heads == [mapping.XLNET_MASK_EMB]
    assert max_diff(sequence, case["torch_hidden"]) <= 1e-4
    assert np.abs(case["torch_hidden"]).mean() > 0.1
    if case["torch_summary"] is not None:
        assert max_diff(pooled, case["torch_summary"]) <= 1e-4
    else:  # XLNetForQuestionAnswering has no summary: written as zeros, and said so
        assert not pooled.any() and any("no sequence summary" in note for note in case["notes"])


@needs_torch
def test_activation_semantics_carry_across(parity):
    """transformers' 'gelu' is the erf form and 'gelu_new' the tanh form; XLNet's TF 'gelu' is the tanh form. The
    written config is in XLNet's own keys and names the form unambiguously; it reads back to the same model."""
    qa, choice = parity["qa"], parity["choice"]
    assert qa["config"].activation() == ("gelu", "erf") and choice["config"].activation() == ("gelu", "tanh")
    written = json.load(open(qa["checkpoint"] + ".config.json"))
    assert written == {"n_token": V, "d_model": H, "n_layer": L, "n_head": N, "d_head": D, "d_inner": I,
                       "ff_activation": "gelu_exact", "untie_r": True, "clamp_len": -1, "gelu_convention": "tf",
                       "layout": "xlnet"}
    assert json.load(open(choice["checkpoint"] + ".config.json"))["ff_activation"] == "gelu"
    source = from_pytorch.read_config(os.path.join(qa["dir"], "pytorch", "config.json"))
    for field in ("layout", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_size",
                  "intermediate_size", "untie_r", "clamp_len"):
        assert getattr(qa["config"], field) == getattr(source, field), field


@needs_torch
def test_exported_graph_holds_standard_ops_and_records_the_layout(parity):
    case = parity["qa"]
    pb = os.path.join(case["dir"], "pb", "model.pb")
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(pb, "rb").read())
    ops = {node.op for node in graph_def.node}
    assert to_pb.custom_op_types(graph_def) == []
    assert not ops & {"VariableV2", "VarHandleOp", "ReadVariableOp"}
    # TF 2.x keeps XLNet's einsums as its core Einsum op; TF 1.13 lowers tf.einsum to MatMul / Transpose.
    assert ("Einsum" in ops) == (not IS_TF1)
    assert sorted(n.name for n in graph_def.node if n.op == "Placeholder") == sorted(to_pb.INPUT_NAMES)
    sidecar = json.load(open(pb + ".json"))
    assert (sidecar["layout"], sidecar["model_config"]["layout"], sidecar["task"]) == ("xlnet", "xlnet", "cmrc2018")
    assert parity["choice"]["sidecar"]["inputs"]["input_ids"]["shape"] == [-1, C, T]
    from serving_demo.model import FrozenModel
    from tf_mrc.errors import UserError
    with pytest.raises(UserError, match="records no vocabulary: .* or --spm_model"):  # exported without one
        FrozenModel(pb)


# ---------------------------------------------------------------------------------------------------------------
# Round trips and naming.

@needs_torch
@pytest.mark.parametrize("class_name", ["XLNetModel", "XLNetForQuestionAnswering", "XLNetForMultipleChoice"])
def test_round_trip_is_bitwise_exact(tmp_path, class_name):
    model = randomize(getattr(transformers, class_name)(xlnet_config("gelu")), 20)
    state = numpy_state(model)
    back, target = round_trip(tmp_path, state, model.config.to_dict(), class_name == "XLNetModel")
    assert target == class_name
    assert sorted(back) == sorted(state)
    for name in state:
        assert back[name].dtype == state[name].dtype and np.array_equal(back[name], state[name]), name
    _, info = getattr(transformers, class_name).from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


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
    [N, D] variable and come back to every layer; per-layer tensors that differ are a one-line error."""
    model = randomize(transformers.XLNetModel(xlnet_config("gelu")), 22)
    state = numpy_state(model)
    for bias in ("r_w_bias", "r_r_bias", "r_s_bias"):
        state["layer.1.rel_attn." + bias] = state["layer.0.rel_attn." + bias].copy()
    config_dict = dict(model.config.to_dict(), untie_r=False)
    back, target = round_trip(tmp_path, state, config_dict)
    assert target == "XLNetModel" and all(np.array_equal(back[name], state[name]) for name in state)
    assert dict(tf.train.list_variables(str(tmp_path / "tf" / "model.ckpt")))["model/transformer/r_w_bias"] == [N, D]
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


# ---------------------------------------------------------------------------------------------------------------
# A tiny XLNet trained here -> .pb -> the demo; answers equal --do_predict's.

@pytest.fixture(scope="module")
def tiny_xlnet(tmp_path_factory):
    from tf_mrc import experiment
    from test_xlnet_tasks import training_sentences
    tmp = tmp_path_factory.mktemp("tiny_xlnet")
    samples = json.load(open(SAMPLES, encoding="utf-8"))["data"]
    corpus = training_sentences() + [p["context"] for a in samples for p in a["paragraphs"]]
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
            "dev_predictions": load("dev_predictions.json")}


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


def test_sidecar_carries_the_sentencepiece_model(tiny_xlnet):
    sidecar = json.load(open(tiny_xlnet["pb"] + ".json"))
    assert (sidecar["layout"], sidecar["vocab_file"], sidecar["lower_case"]) == ("xlnet", None, None)
    copied = os.path.join(os.path.dirname(tiny_xlnet["pb"]), sidecar["spm_model"])
    assert open(copied, "rb").read() == open(tiny_xlnet["spec"].spm_model, "rb").read()
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(tiny_xlnet["pb"], "rb").read())
    assert to_pb.custom_op_types(graph_def) == []


def test_demo_answers_equal_do_predict(tiny_xlnet, tmp_path):
    """The CLI in a fresh process (SentencePieceTokenizer from the sidecar, left-padded windows), and the model
    class on the dev file; the long sample is answered over several windows."""
    from serving_demo.model import FrozenModel
    out = tmp_path / "demo.json"
    result = subprocess.run([sys.executable, "-m", "serving_demo", "--pb", tiny_xlnet["pb"], "--file", SAMPLES,
                             "--output", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads(out.read_text(encoding="utf-8"))
    assert predictions == tiny_xlnet["predictions"] and all(predictions.values())
    model = FrozenModel(tiny_xlnet["pb"])
    assert type(model.tokenizer).__name__ == "SentencePieceTokenizer"
    dev_predictions, _, _ = model.predict_file(tiny_xlnet["spec"].dev_file)
    assert dev_predictions == tiny_xlnet["dev_predictions"]
    _, _, timings = model.predict_file(SAMPLES)
    assert max(timings["windows"]) >= 2
    long_sample = json.load(open(SAMPLES, encoding="utf-8"))["data"][1]["paragraphs"][0]
    qa = long_sample["qas"][0]
    answer = model.answer([{"passage": long_sample["context"], "question": qa["question"]}])[0]
    assert answer["answer"] == tiny_xlnet["predictions"][qa["id"]] and answer["windows"] >= 2
