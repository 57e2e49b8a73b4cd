"""Mixed precision, gradient accumulation, recompute and attention-dropout placement (tf_mrc.training, layers).

References: AdamW's first step recomputed in NumPy (loss scaling), the same update with a doubled batch (grad
accumulation), plain autodiff of the same block (recompute), the fp32 model on the fp16-trained checkpoint.
"""
import contextlib
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from tf_mrc import distributed, experiment, training
from tf_mrc.compat import IS_TF1, tf
from tf_mrc.modeling import build_encoder, layers
from tf_mrc.modeling.checkpoint import _TRAINING_STATE, variable_name
from tf_mrc.modeling.config import ModelConfig, model_config
from tf_mrc.modeling.heads import build_head
from tf_mrc.ops import native

BATCH, LENGTH = 4, 16


def tiny_config(dropout=0.0):
    return ModelConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=LENGTH, hidden_dropout_prob=dropout,
                       attention_probs_dropout_prob=dropout)


def span_batches(count, batch=BATCH, seed=0):
    """``count`` batches of random span features with padded tails."""
    rng = np.random.RandomState(seed)
    batches = []
    for _ in range(count):
        lengths = rng.randint(LENGTH // 2, LENGTH + 1, size=batch)
        mask = (np.arange(LENGTH)[None, :] < lengths[:, None]).astype(np.int32)
        start = rng.randint(0, LENGTH // 2, size=batch)
        batches.append({"input_ids": rng.randint(1, 60, size=(batch, LENGTH)) * mask, "input_mask": mask,
                        "segment_ids": (np.arange(LENGTH)[None, :] >= 4).astype(np.int32) * mask,
                        "start_position": start, "end_position": start + rng.randint(0, 3, size=batch)})
    return batches


def span_loss(config, recompute=False, compute_dtype="float32", batch=None):
    """Placeholders for span features and the span loss of the tiny BERT over them."""
    feeds = {name: tf.placeholder(tf.int32, [batch, LENGTH], name)
             for name in ("input_ids", "input_mask", "segment_ids")}
    feeds.update({name: tf.placeholder(tf.int32, [batch], name) for name in ("start_position", "end_position")})
    output = build_encoder(config, feeds["input_ids"], feeds["input_mask"], feeds["segment_ids"], True,
                           compute_dtype=compute_dtype, recompute=recompute)
    _, loss = build_head("span", output, feeds, None, config.initializer_range, True)
    return feeds, loss


def feed(placeholders, batch):
    return {placeholders[name]: value for name, value in batch.items()}


def values_by_name(session, variables):
    return {variable_name(v): value for v, value in zip(variables, session.run(variables))}


# ---------------------------------------------------------------------------------------------------------------
# fp16 loss scaling
# ---------------------------------------------------------------------------------------------------------------

def test_fp16_overflow_skips_the_step_and_the_scale_recovers():
    """loss = factor * sum(w * x) computed in fp16. Its gradient is factor * x, scaled by 2**15 in the fp16
    backward pass: factor 1 fits fp16, factor 100 overflows it (3.3e6 > 65504)."""
    x = np.array([1.0, 0.5, -1.0, 0.25], np.float32)
    w0 = np.array([0.5, -0.25, 1.0, 2.0], np.float32)
    lr, growth = 0.01, 3
    with tf.Graph().as_default():
        w = tf.get_variable("w", initializer=w0)
        factor = tf.placeholder_with_default(1.0, [])
        loss = tf.cast(tf.reduce_sum(tf.cast(w, tf.float16) * tf.cast(x, tf.float16) * tf.cast(factor, tf.float16)),
                       tf.float32)
        train_op, _, scale = training.create_train_op(loss, lr, num_train_steps=10 ** 6, num_warmup_steps=0,
                                                      dist=distributed.SingleProcess(), precision="fp16",
                                                      loss_scale_growth_interval=growth)
        global_step = tf.train.get_global_step()
        state = [v for v in tf.global_variables() if not v.trainable]
        assert all(_TRAINING_STATE.search(variable_name(v)) for v in state), [v.name for v in state]
        m, v = (tf.global_variables("w/adam_" + suffix)[0] for suffix in ("m", "v"))
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())

            def snapshot():
                return dict(zip(["w", "m", "v", "step", "scale", "good", "skipped"], session.run(
                    [w, m, v, global_step, scale.scale, scale.good_steps, scale.skipped_steps])))

            assert snapshot()["scale"] == 2.0 ** 15
            session.run(train_op)
            first = snapshot()
            # NumPy AdamW step on the unscaled gradient x, clipped to norm 1 (unscaling happens before clipping)
            grad = x / max(1.0, np.linalg.norm(x))
            m1, v1 = 0.1 * grad, 0.001 * grad ** 2
            np.testing.assert_allclose(first["m"], m1, rtol=1e-6)
            # ApplyAdam weighs g^2 by 1 - beta_2 computed in fp32: 1 - float32(0.999) = 0.001 (1 - 1.3e-5)
            np.testing.assert_allclose(first["v"], v1, rtol=2e-5)
            np.testing.assert_allclose(first["w"], w0 - lr * (m1 / (np.sqrt(v1) + 1e-6) + 0.01 * w0), rtol=1e-6)
            assert (first["step"], first["scale"], first["good"], first["skipped"]) == (1, 2.0 ** 15, 1, 0)

            session.run(train_op, {factor: 100.0})  # overflows: skipped
            skipped = snapshot()
            for name in ("w", "m", "v"):
                np.testing.assert_array_equal(skipped[name], first[name])
            assert (skipped["step"], skipped["scale"], skipped["good"], skipped["skipped"]) == (2, 2.0 ** 14, 0, 1)

            for step in range(growth):
                session.run(train_op)
                now = snapshot()
                assert now["step"] == 3 + step and now["skipped"] == 1
                assert not np.array_equal(now["w"], skipped["w"])
                # doubles after `growth` clean steps, then counts again from 0
                assert (now["scale"], now["good"]) == ((2.0 ** 14, step + 1) if step + 1 < growth else (2.0 ** 15, 0))


def test_fp16_accumulated_steps_unscale_once_and_skip_whole_windows():
    """fp16 with K=2: the loss-scaled sums are divided by (scale x K) inside clipping; the first window's update
    equals NumPy AdamW on the mean gradient; a window with one overflowing micro-batch is skipped whole."""
    x = [np.array([0.5, 0.25, -0.5, 0.125], np.float32), np.array([0.25, -0.25, 0.0, 0.5], np.float32)]
    w0 = np.array([0.5, -0.25, 1.0, 2.0], np.float32)
    lr = 0.01  # the mean gradient's norm is 0.55: not clipped, so m shows its scale
    with tf.Graph().as_default():
        w = tf.get_variable("w", initializer=w0)
        inputs = tf.placeholder(tf.float32, [4])
        factor = tf.placeholder_with_default(1.0, [])
        loss = tf.cast(tf.reduce_sum(tf.cast(w, tf.float16) * tf.cast(inputs * factor, tf.float16)), tf.float32)
        train_op, _, scale = training.create_train_op(loss, lr, num_train_steps=10 ** 6, num_warmup_steps=0,
                                                      dist=distributed.SingleProcess(), precision="fp16",
                                                      grad_accum_steps=2)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            for batch in x:
                session.run(train_op, {inputs: batch})
            grad = (x[0] + x[1]) / 2.0
            m1, v1 = 0.1 * grad, 0.001 * grad ** 2
            np.testing.assert_allclose(session.run(tf.global_variables("w/adam_m")[0]), m1, rtol=1e-6)
            first = session.run(w)
            np.testing.assert_allclose(first, w0 - lr * (m1 / (np.sqrt(v1) + 1e-6) + 0.01 * w0), rtol=2e-5)
            session.run(train_op, {inputs: x[0], factor: 100.0})  # overflows fp16
            session.run(train_op, {inputs: x[1]})
            np.testing.assert_array_equal(session.run(w), first)
            assert session.run([scale.scale, scale.skipped_steps, tf.train.get_global_step()]) == [2.0 ** 14, 1, 2]


@pytest.mark.parametrize("resource", [False, True])
@pytest.mark.parametrize("use_native", [True, False])
def test_adamw_updates_wait_for_the_gradient_and_are_fused(use_native, resource):
    """Each variable's update is the fused kernels only (no parameter-sized elementwise temporaries, which
    bench_training once measured at 1.1 GB for BERT-base), and each runs only once the gradient exists. The
    native op folds clipping's multiply in as well; the stock kernels leave one multiply per gradient."""
    with tf.Graph().as_default() as graph, (contextlib.nullcontext() if use_native else native.off()):
        with tf.variable_scope("", use_resource=resource):
            w = tf.get_variable("layer/kernel", [8, 8])
            b = tf.get_variable("layer/bias", [8])
        loss = tf.reduce_sum(tf.square(tf.matmul(tf.ones([2, 8]), w) + b))
        training.create_train_op(loss, 0.01, 100, 0, distributed.SingleProcess())
        optimizer_ops = [op for op in graph.get_operations() if op.name.startswith("AdamWeightDecay/")]
        kernels = sorted(op.type.replace("Resource", "") for op in optimizer_ops
                         if op.type.startswith(("Apply", "Resource", "TfMrc")))
        # the resource-variable form of the native op exists on TF 2 only (see kernels.cc)
        use_native = use_native and (not resource or hasattr(native.library(), "tf_mrc_apply_adam_w"))
        if use_native:
            assert kernels == 2 * ["TfMrcApplyAdamW" + ("" if resource else "Ref")]
        else:
            assert kernels == ["ApplyAdam", "ApplyAdam", "ApplyGradientDescent"]  # the bias is not decayed
        elementwise = ("Mul", "AddV2", "Add", "Sub", "RealDiv")
        parameter_sized = [op.name for op in optimizer_ops if op.type in elementwise
                           and op.outputs[0].shape.num_elements() not in (None, 1)]
        assert parameter_sized == []
        clip_multiplies = [op for op in graph.get_operations() if op.name.startswith("clip_by_global_norm")
                           and op.type == "Mul" and op.outputs[0].shape.num_elements() not in (None, 1)]
        assert len(clip_multiplies) == (0 if use_native else 2)

        def depends_on_gradient(op, seen):
            for parent in [t.op for t in op.inputs] + list(op.control_inputs):
                if parent.name.startswith("gradients/"):
                    return True
                if parent not in seen:
                    seen.add(parent)
                    if depends_on_gradient(parent, seen):
                        return True
            return False

        assert [op.name for op in optimizer_ops if op.type.startswith(("Apply", "Resource", "TfMrc"))
                and not depends_on_gradient(op, set())] == []


@pytest.mark.parametrize("resource", [False, True])
@pytest.mark.parametrize("use_native", [True, False])
def test_adamw_matches_google_bert_arithmetic_over_steps(use_native, resource):
    """Three steps of create_train_op (clipping at norm 1, warmup then decay) against google BERT's
    AdamWeightDecayOptimizer update recomputed in NumPy: decayed kernel, undecayed bias and LayerNorm gamma;
    the native AdamW op and the stock kernels alike."""
    rng = np.random.RandomState(3)
    values = {"dense/kernel": rng.randn(4, 3), "dense/bias": rng.randn(3), "LayerNorm/gamma": rng.randn(3)}
    targets = [rng.randn(5, 3) for _ in range(3)]
    inputs = rng.randn(5, 4)
    lr, steps, warmup, decay = 0.05, 10, 2, 0.01
    with tf.Graph().as_default(), (contextlib.nullcontext() if use_native else native.off()):
        with tf.variable_scope("", use_resource=resource):
            variables = {name: tf.get_variable(name, initializer=value.astype(np.float32))
                         for name, value in values.items()}
        target = tf.placeholder(tf.float32, [5, 3])
        output = tf.matmul(inputs.astype(np.float32), variables["dense/kernel"]) + variables["dense/bias"]
        loss = tf.reduce_sum(tf.square(output * variables["LayerNorm/gamma"] - target))
        grads = dict(zip(variables, tf.gradients(loss, list(variables.values()))))
        train_op, _, _ = training.create_train_op(loss, lr, steps, warmup, distributed.SingleProcess(),
                                                  weight_decay_rate=decay)
        slots = {name: [tf.global_variables(name + "/adam_" + s)[0] for s in "mv"] for name in variables}
        assert all(slot.op.type == ("VarHandleOp" if resource else "VariableV2")
                   for pair in slots.values() for slot in pair)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            moments = {name: [np.zeros(value.shape), np.zeros(value.shape)] for name, value in values.items()}
            for step, y in enumerate(targets):
                # each step's change is compared (relative to its size), and the expectation starts from tf's
                # own weights, so rounding does not compound
                before = session.run(variables)
                expected = {name: value.astype(np.float64) for name, value in before.items()}
                g = {name: value.astype(np.float64) for name, value in session.run(grads, {target: y}).items()}
                norm = np.sqrt(sum(np.sum(value ** 2) for value in g.values()))
                rate = lr * step / warmup if step < warmup else lr * (1.0 - step / steps)
                for name, grad in g.items():
                    grad = grad / max(norm, 1.0)
                    m, v = moments[name]
                    m[...] = 0.9 * m + 0.1 * grad
                    v[...] = 0.999 * v + 0.001 * grad ** 2
                    update = m / (np.sqrt(v) + 1e-6)
                    if name == "dense/kernel":
                        update += decay * expected[name]
                    expected[name] = expected[name] - rate * update
                session.run(train_op, {target: y})
                actual = session.run(variables)
                for name, value in actual.items():
                    np.testing.assert_allclose(value - before[name], expected[name] - before[name], rtol=1e-4,
                                               atol=1e-9, err_msg=name)
                    np.testing.assert_allclose(session.run(slots[name][0]), moments[name][0], rtol=2e-6, atol=1e-9)
                assert step == 0 or np.abs(actual["dense/kernel"] - before["dense/kernel"]).min() > 1e-3


def test_horovod_ranks_skip_the_same_fp16_steps(tmp_path):
    """2 ranks; only rank 1's gradient overflows at the second step. Gradients are allreduced before the finite
    check, so both ranks skip it: same weights, scale and skip count everywhere (a rank-local check would let
    rank 0 apply the step and the weights would part)."""
    import subprocess
    import sys
    from conftest import ROOT, horovod_job_env, horovodrun
    command = [horovodrun(), "-np", "2", "-H", "localhost:2", sys.executable,
               str(ROOT / "tests" / "hvd_fp16_probe.py"), str(tmp_path)]
    job = subprocess.run(command, env=horovod_job_env(), capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    ranks = [json.loads((tmp_path / ("rank%d.json" % rank)).read_text()) for rank in (0, 1)]
    assert ranks[0] == ranks[1]
    first, skipped = ranks[0][0], ranks[0][1]
    assert (first["skipped"], skipped["skipped"], skipped["step"]) == (0, 1, 2)
    assert skipped["w"] == first["w"] and skipped["m"] == first["m"]
    assert (first["scale"], skipped["scale"], ranks[0][3]["scale"]) == (2.0 ** 15, 2.0 ** 14, 2.0 ** 14)


def test_precision_flags_reject_bad_values():
    spec = experiment.embedded_default()
    for field, value, message in [("precision", "half", "--precision"), ("grad_accum_steps", 0, "grad_accum_steps"),
                                  ("attention_dropout_placement", "values", "placement")]:
        bad = experiment.RunSpec(**dict(vars(spec), **{field: value}))
        with pytest.raises(experiment.UserError, match=message):
            experiment.run(bad)


# ---------------------------------------------------------------------------------------------------------------
# fp16 end to end, and the fp16-trained checkpoint in fp32
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fp16_run(tmp_path_factory):
    """The embedded default trained in fp16 for 2 epochs (8 steps: fp16 matmuls run ~50x slower than fp32 on CPU)."""
    spec = experiment.embedded_default(str(tmp_path_factory.mktemp("fp16") / "out"))
    spec.precision, spec.num_train_epochs, spec.do_predict, spec.log_every = "fp16", 2.0, False, 1000
    logged = []
    scores = experiment.run(spec, log=logged.append)[0]
    return spec, scores, logged


def test_fp16_training_converges(fp16_run):
    spec, scores, logged = fp16_run
    assert any("precision=fp16" in line for line in logged)
    # the untrained model answers ~0 F1 (test_end_to_end); fp32 reaches ~55 after these 2 epochs
    assert scores["f1"] > 30.0, scores
    assert scores["total"] == 29


def test_fp16_checkpoint_predicts_the_same_in_fp32(fp16_run):
    from tf_mrc.data import FeatureCache
    from tf_mrc.estimator import make_estimator, model_fn_builder, predict_outputs
    from tf_mrc.tasks import FeatureSettings, get_task
    spec, _, _ = fp16_run
    dist = distributed.SingleProcess()
    task = get_task("cmrc2018")
    config, tokenizer, _ = experiment.resolve_model(spec)
    settings = FeatureSettings(spec.max_seq_length, spec.doc_stride, spec.max_query_length)
    data = FeatureCache(str(pathlib.Path(spec.output_dir) / "cache"), task, spec.dev_file, tokenizer, settings, False,
                        dist, log=lambda line: None)
    logits = {}
    for precision in ("fp16", "fp32"):
        model_fn = model_fn_builder(task, config, experiment.RunSpec(precision=precision), dist=dist)
        estimator = make_estimator(model_fn, spec.output_dir, dist)
        outputs = predict_outputs(estimator, data.input_fn_builder(8, dist))
        logits[precision] = np.stack([np.stack([o["start_logits"], o["end_logits"]]) for o in outputs])
    assert logits["fp32"].shape == (29, 2, spec.max_seq_length)
    difference = np.abs(logits["fp16"] - logits["fp32"])
    # fp16 activations carry ~3 significant digits through 2 layers: measured max 0.0008 on logits up to 1.5
    assert difference.max() < 0.01, difference.max()
    assert np.mean(np.argmax(logits["fp16"], -1) == np.argmax(logits["fp32"], -1)) > 0.98


# ---------------------------------------------------------------------------------------------------------------
# gradient accumulation
# ---------------------------------------------------------------------------------------------------------------

def test_grad_accumulation_equals_the_doubled_batch():
    """K=2 micro-batches of b == one batch of 2b: two optimizer steps, fp32, no dropout."""
    config = tiny_config()
    micro = span_batches(4, batch=BATCH)
    doubled = [{name: np.concatenate([micro[2 * i][name], micro[2 * i + 1][name]]) for name in micro[0]}
               for i in range(2)]
    results, initial = {}, None
    for steps in (1, 2):
        with tf.Graph().as_default():
            placeholders, loss = span_loss(config)
            train_op, _, _ = training.create_train_op(loss, 0.01, 100, 0, distributed.SingleProcess(),
                                                      grad_accum_steps=steps)
            global_step = tf.train.get_global_step()
            with tf.Session() as session:
                session.run(tf.global_variables_initializer())
                if initial is None:
                    initial = values_by_name(session, tf.trainable_variables())
                for v in tf.trainable_variables():
                    v.load(initial[variable_name(v)], session)
                if steps == 1:
                    for batch in doubled:
                        session.run(train_op, feed(placeholders, batch))
                else:
                    session.run(train_op, feed(placeholders, micro[0]))
                    assert session.run(global_step) == 0  # a micro-batch is not an optimizer step
                    unchanged = values_by_name(session, tf.trainable_variables())
                    assert all(np.array_equal(unchanged[name], initial[name]) for name in initial)
                    for batch in micro[1:]:
                        session.run(train_op, feed(placeholders, batch))
                    sums = [v for v in tf.global_variables() if v.name.endswith("/accum_grad:0")]
                    assert len(sums) == len(tf.trainable_variables())
                    assert all(not np.any(value) for value in session.run(sums))  # zeroed after the step
                assert session.run(global_step) == 2
                state = [v for v in tf.global_variables() if "accum_grad" not in v.name and "micro_step" not in v.name]
                results[steps] = values_by_name(session, state)
    assert set(results[1]) == set(results[2])
    # Adam's moments follow the gradients: tight. Parameters get atol 1e-4 (a step moves them by up to
    # lr * 3 = 0.03): the last LayerNorm beta and the span bias have an exactly zero true gradient (the softmax
    # cross-entropy's gradient sums to 0 over positions), and Adam turns their float noise into ~1e-5 steps.
    # (~1e-9 noise in m = 0.1 g, ~1e-18 in v = 0.001 g^2).
    atol = {"adam_m": 1e-8, "adam_v": 1e-12}
    for name, value in results[1].items():
        np.testing.assert_allclose(results[2][name], value, rtol=1e-4, atol=atol.get(name.split("/")[-1], 1e-4),
                                   err_msg=name)
    assert np.abs(results[1]["cls/squad/output_weights"] - initial["cls/squad/output_weights"]).max() > 1e-2  # 2 steps


# ---------------------------------------------------------------------------------------------------------------
# recompute
# ---------------------------------------------------------------------------------------------------------------

def _gradients(build, initial=None):
    """(gradient of a fixed weighting of build()'s output w.r.t. its input and every variable, by name;
    output; variable values). ``initial``: values to load first."""
    with tf.Graph().as_default():
        x = tf.constant(np.random.RandomState(1).randn(BATCH * LENGTH, 16).astype(np.float32))
        y = build(x)
        weights = tf.constant(np.random.RandomState(2).randn(*y.shape.as_list()).astype(np.float32))
        variables = tf.trainable_variables()
        grads = tf.gradients(tf.reduce_sum(y * weights), [x] + variables)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            if initial:
                for v in variables:
                    v.load(initial[variable_name(v)], session)
            names = ["x"] + [variable_name(v) for v in variables]
            values = session.run(grads + [y])
            return dict(zip(names, values[:-1])), values[-1], values_by_name(session, variables)


def test_recompute_gives_autodiff_gradients_with_dropout():
    """One block with dropout 0.3 and fixed seeded masks: recomputed vs plain autodiff of the same function."""
    config = tiny_config(dropout=0.3)
    mask = np.ones([BATCH, 1, LENGTH], np.float32)
    mask[0, 0, LENGTH // 2:] = 0.0

    def block(rates):
        def apply(h):
            settings = layers.make_settings(rates, True, "fused", "float32")
            settings = settings._replace(dropout_fn=layers.SeededDropout(tf.constant([7, 11], tf.int64)))
            return layers.transformer_block(h, tf.constant(mask), BATCH, LENGTH, config, settings, layers.BERT_BLOCK)
        return apply

    def in_layer_scope(fn):
        def build(x):
            with tf.variable_scope("layer", use_resource=True):  # custom_gradient needs resource variables
                return fn(x)
        return build

    reference, y_reference, initial = _gradients(in_layer_scope(block(config)))
    grads, y, _ = _gradients(in_layer_scope(lambda x: layers.recomputed(block(config), x)), initial)
    _, y_without_dropout, _ = _gradients(in_layer_scope(block(tiny_config())), initial)
    assert not np.allclose(y_reference, y_without_dropout)  # dropout is on
    np.testing.assert_allclose(y, y_reference, rtol=1e-6, atol=1e-6)
    assert set(grads) == set(reference) and len(grads) == 17
    for name in reference:
        np.testing.assert_allclose(grads[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("layout", ["bert", "albert/google", "albert/brightmart"])
def test_recompute_encoder_gradients_equal_and_keep_only_block_inputs(layout):
    """The whole encoder with --recompute: same gradients as without (dropout off), and the backward pass reads
    from the forward pass little more than each block's input. ALBERT runs its shared block's variables
    through several recomputed blocks."""
    config = tiny_config()
    if layout != "bert":
        config = model_config(**dict(config.to_dict(), layout="albert", embedding_size=8,
                                     albert_variant=layout.split("/")[1]))
    batch = span_batches(1)[0]
    grads, saved = {}, {}
    initial = None
    for recompute in (False, True):
        with tf.Graph().as_default():
            placeholders, loss = span_loss(config, recompute=recompute, batch=BATCH)
            forward_ops = set(tf.get_default_graph().get_operations())
            variables = [v for v in tf.trainable_variables() if "pooler" not in v.name]  # unused by the span head
            gradients = tf.gradients(loss, variables)
            saved[recompute] = sum(t.shape.num_elements() or 0 for t in _forward_tensors_read(gradients, forward_ops)
                                   if t.dtype == tf.float32 and t.shape.is_fully_defined())
            with tf.Session() as session:
                session.run(tf.global_variables_initializer())
                if initial is None:
                    initial = values_by_name(session, variables)
                for v in variables:
                    v.load(initial[variable_name(v)], session)
                values = session.run([tf.convert_to_tensor(g) for g in gradients], feed(placeholders, batch))
                grads[recompute] = dict(zip([variable_name(v) for v in variables], values))
    assert set(grads[True]) == set(grads[False])
    for name, value in grads[False].items():
        np.testing.assert_allclose(grads[True][name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    assert saved[True] < 0.5 * saved[False], saved


def _forward_tensors_read(grads, forward_ops):
    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_kernels.py"
    spec = importlib.util.spec_from_file_location("bench_kernels", str(path))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.forward_tensors_read_by_backward(grads, forward_ops, upstream=None)[0]


# ---------------------------------------------------------------------------------------------------------------
# attention dropout placement
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("placement, shape", [("probs", [BATCH, 2, LENGTH, LENGTH]), ("context", [BATCH * LENGTH, 16])])
def test_attention_dropout_placement_reaches_the_attention_layer(placement, shape):
    """Hidden dropout off, attention dropout on: the only random ops in a layer's attention scope are the
    dropout's, on the probabilities [B, N, T, T] or on the merged context [B*T, H]."""
    config = ModelConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=LENGTH, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.1)
    with tf.Graph().as_default() as graph:
        ids = tf.zeros([BATCH, LENGTH], tf.int32)
        build_encoder(config, ids, tf.ones_like(ids), ids, True, attention_dropout_placement=placement)
        random = [op for op in graph.get_operations() if op.type in ("RandomUniform", "TfMrcDropout")]
        assert len(random) == 1 and "attention/self" in random[0].name
        masked = random[0].inputs[0] if random[0].type == "TfMrcDropout" else random[0].outputs[0]
        assert masked.shape.as_list() == shape


@pytest.mark.skipif(IS_TF1, reason="bf16 compute needs TF 2")
def test_bf16_training_step_runs_with_fp32_variables():
    with tf.Graph().as_default():
        placeholders, loss = span_loss(tiny_config(), compute_dtype="bfloat16")
        train_op, _, loss_scale = training.create_train_op(loss, 0.01, 100, 0, distributed.SingleProcess(),
                                                           precision="bf16")
        assert loss_scale is None and loss.dtype == tf.float32
        assert {v.dtype.base_dtype for v in tf.global_variables()} <= {tf.float32, tf.int64}
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            variables = [v for v in tf.trainable_variables() if "pooler" not in v.name]  # unused by the span head
            before = session.run(variables)
            session.run(train_op, feed(placeholders, span_batches(1)[0]))
            after = session.run(variables)
    assert all(np.all(np.isfinite(a)) and not np.array_equal(a, b) for a, b in zip(after, before))


def test_resuming_an_fp32_run_in_fp16_is_a_user_error(tmp_path):
    spec = experiment.embedded_default(str(tmp_path / "out"))
    spec.do_eval = spec.do_predict = False
    spec.max_train_steps, spec.log_every = 1, 1000
    experiment.run(spec, log=lambda line: None)
    spec.precision, spec.max_train_steps = "fp16", 2
    with pytest.raises(experiment.UserError, match="trained without --precision=fp16"):
        experiment.run(spec, log=lambda line: None)


def test_fp16_run_logs_the_loss_scale(fp16_run):
    spec, _, logged = fp16_run
    progress = [line for line in logged if line.startswith("[train] step")]
    assert progress and all("loss scale" in line and "skipped" in line for line in progress)
    tags = set()
    for path in pathlib.Path(spec.output_dir).glob("events.out.tfevents*"):
        for event in tf.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    assert {"fp16/loss_scale", "fp16/skipped_steps"} <= tags, tags
