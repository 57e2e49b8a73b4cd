"""tf_mrc.ops.native: the C++ kernels build on this stack and equal their composite twins (values and gradients,
op by op and through a whole encoder), dropout draws what its definition says, and every path that must not use
them (no compiler, TF_MRC_NATIVE_KERNELS=0, a visible GPU, non-float32) falls back to the composite ops."""
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from conftest import numpy_gelu
from tf_mrc import ops
from tf_mrc.compat import IS_TF1, tf
from tf_mrc.modeling import build_encoder
from tf_mrc.modeling.config import ModelConfig
from tf_mrc.modeling.heads import build_head
from tf_mrc.ops import fused, native

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def native_types(graph):
    return sorted({op.type for op in graph.get_operations() if op.type.startswith("TfMrc")})


def both_forms(build):
    """Run ``build()`` (a list of tensors) in a graph with the native ops and in one with the composite ops; the
    variables start from the same values, set by name (initializers' op seeds depend on the graph's op count)."""
    results = []
    for use_native in (True, False):
        graph = tf.Graph()
        with graph.as_default():
            tf.set_random_seed(0)
            if use_native:
                fetches = build()
                assert native_types(graph), "the native ops were expected here"
            else:
                with native.off():
                    fetches = build()
                assert not native_types(graph)
            with tf.Session(graph=graph) as session:
                session.run(tf.global_variables_initializer())
                for variable in tf.global_variables():
                    rng = np.random.RandomState(zlib.crc32(variable.op.name.encode()))
                    variable.load(0.05 * rng.randn(*variable.shape.as_list()).astype(np.float32), session)
                results.append(session.run(fetches))
    return results


def assert_pairs_close(native_values, composite_values, atol, rtol):
    for index, (a, b) in enumerate(zip(native_values, composite_values)):
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, err_msg="output %d" % index)


def test_the_library_builds_and_loads_on_this_stack():
    assert native.library() is not None, native.status()
    assert native.status().startswith("native C++")


@pytest.mark.parametrize("form", ["tanh", "erf", "sigmoid"])
def test_gelu_is_as_accurate_as_the_composite_op_across_chunk_boundaries(form):
    """Against float64: the native op's worst error (relative to max(1, |value|)) is within twice the composite
    op's, which float32 bounds (Numerical Recipes' erfc is 2 ulp, TF's 1; near the erf derivative's zero at
    x = -0.75 that shows)."""
    rng = np.random.RandomState(1)
    x = (3.0 * rng.randn(7, 1031)).astype(np.float32)  # 7,217 elements: seven 1,024-element chunks and a tail
    x[0, :4] = [-30.0, -9.0, 9.0, 30.0]  # the far tails, where a cancelling spelling would show
    upstream = rng.randn(7, 1031).astype(np.float32)

    def build():
        x_t = tf.constant(x)
        y = fused.gelu(x_t, form)
        return [y, tf.gradients(y, x_t, tf.constant(upstream))[0]]

    value, derivative = numpy_gelu(x.astype(np.float64), form)
    expected = [value, derivative * upstream]
    runs = both_forms(build)
    errors = [[np.max(np.abs(actual - want) / np.maximum(np.abs(want), 1.0)) for actual, want in zip(run, expected)]
              for run in runs]
    native_errors, composite_errors = errors
    for native_error, composite_error in zip(native_errors, composite_errors):
        assert native_error <= max(2.0 * composite_error, 1e-7), errors
    assert np.all(np.isfinite(runs[0][0]))  # no NaN from the far tails


@pytest.mark.parametrize("bias_rows", [1, 5])
def test_masked_softmax_equals_the_composite_op(bias_rows):
    rng = np.random.RandomState(2)
    scores = (4.0 * rng.randn(3, 2, 5, 77)).astype(np.float32)
    upstream = rng.randn(3, 2, 5, 77).astype(np.float32)
    lengths = np.array([77, 40, 1])
    mask = (np.arange(77)[None, None, :] < lengths[:, None, None]).astype(np.float32)
    mask = np.repeat(mask, bias_rows, axis=1) * (rng.rand(3, bias_rows, 77) > 0.2 if bias_rows > 1 else 1.0)
    mask[:, :, 0] = 1.0

    def build():
        s = tf.constant(scores)
        p = fused.masked_softmax(s, tf.constant(mask.astype(np.float32)), 0.125)
        return [p, tf.gradients(p, s, tf.constant(upstream))[0]]

    assert_pairs_close(*both_forms(build), atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("with_residual", [False, True])
def test_layer_norm_equals_the_composite_op(with_residual):
    rng = np.random.RandomState(3)
    rows = 130  # two full blocks of 64 rows in the gradient's reduction and a partial one
    x = (3.0 * rng.randn(rows, 96) + rng.randn(rows, 1)).astype(np.float32)
    residual = rng.randn(rows, 96).astype(np.float32)
    gamma, beta = (1.0 + 0.3 * rng.randn(96)).astype(np.float32), rng.randn(96).astype(np.float32)
    upstream = rng.randn(rows, 96).astype(np.float32)

    def build():
        inputs = [tf.constant(v) for v in (x, residual, gamma, beta)]
        y = fused.layer_norm(inputs[0], inputs[2], inputs[3], 1e-12, inputs[1] if with_residual else None)
        grads = tf.gradients(y, inputs, tf.constant(upstream))
        return [y] + [g for g in grads if g is not None]

    native_values, composite_values = both_forms(build)
    assert len(native_values) == (5 if with_residual else 4)
    assert_pairs_close(native_values, composite_values, atol=2e-5, rtol=2e-5)


def test_layer_norm_gradient_sums_do_not_depend_on_the_thread_count():
    rng = np.random.RandomState(4)
    x, upstream = rng.randn(300, 64).astype(np.float32), rng.randn(300, 64).astype(np.float32)

    def run(threads):
        with tf.Graph().as_default():
            inputs = [tf.constant(x), tf.ones([64]), tf.zeros([64])]
            y = fused.layer_norm(inputs[0], inputs[1], inputs[2], 1e-12)
            grads = tf.gradients(y, inputs, tf.constant(upstream))
            config = tf.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
            with tf.Session(config=config) as session:
                return session.run(grads)

    for single, parallel in zip(run(1), run(2)):
        np.testing.assert_array_equal(single, parallel)


# --------------------------------------------------------------------------------------------------- dropout

def run_dropout(x, rate, upstream=None, seed=None, steps=1):
    with tf.Graph().as_default() as graph:
        if seed is not None:
            tf.set_random_seed(seed)
        x_t = tf.constant(x)
        y = fused.dropout(x_t, rate)
        fetches = [y]
        if upstream is not None:
            fetches.append(tf.gradients(y, x_t, tf.constant(upstream))[0])
        assert native_types(graph) == (["TfMrcDropout", "TfMrcDropoutGrad"] if upstream is not None
                                       else ["TfMrcDropout"])
        with tf.Session() as session:
            return [session.run(fetches) for _ in range(steps)]


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_keeps_each_element_with_probability_one_minus_rate(rate):
    n = 64 * 20000
    (y,), = run_dropout(np.ones(n, np.float32), rate)
    kept = y != 0
    # kept values are exactly x / (1 - rate), as tf.nn.dropout's
    np.testing.assert_array_equal(np.unique(y[kept]), np.float32(1.0) / np.float32(1.0 - rate))
    sigma = np.sqrt(rate * (1 - rate) / n)
    assert abs(kept.mean() - (1 - rate)) < 5 * sigma
    # every position within a 64-element word and within a 4-draw group keeps at the same rate
    per_position = kept.reshape(-1, 64).mean(0)
    assert np.abs(per_position - (1 - rate)).max() < 5 * np.sqrt(rate * (1 - rate) / (n / 64))
    # neighbours are independent: P(both kept) = (1 - rate)^2
    both = (kept[1:] & kept[:-1]).mean()
    assert abs(both - (1 - rate) ** 2) < 5 * np.sqrt((1 - rate) ** 2 * (1 - (1 - rate) ** 2) / n)


def test_dropout_gradient_is_the_scaled_mask_and_the_mask_is_a_bit_per_element():
    rng = np.random.RandomState(5)
    x = rng.randn(1001).astype(np.float32)  # not a multiple of 8 or 64
    upstream = rng.randn(1001).astype(np.float32)
    (y, dx), = run_dropout(x, 0.3, upstream)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(0.7), rtol=1e-6)
    np.testing.assert_allclose(dx, np.where(kept, upstream / np.float32(0.7), 0.0), rtol=1e-6)
    with tf.Graph().as_default():
        x_t = tf.placeholder(tf.float32, [1001])
        y_t = fused.dropout(x_t, 0.3)
        (grad_op,) = [op for op in tf.gradients(y_t, x_t)[0].graph.get_operations() if op.type == "TfMrcDropoutGrad"]
        mask = grad_op.inputs[1]
        assert mask.dtype == tf.uint8 and mask.shape.as_list() == [126]  # ceil(1001 / 8) bytes, not 1001 bools


def test_dropout_is_repeatable_under_a_graph_seed_and_fresh_every_step():
    x = np.ones(4096, np.float32)
    first = run_dropout(x, 0.5, seed=7, steps=2)
    again = run_dropout(x, 0.5, seed=7, steps=2)
    np.testing.assert_array_equal(first[0][0], again[0][0])
    np.testing.assert_array_equal(first[1][0], again[1][0])
    assert (first[0][0] != first[1][0]).mean() > 0.3  # a new mask every step
    other = run_dropout(x, 0.5, seed=8)
    assert (first[0][0] != other[0][0]).mean() > 0.3


def test_dropout_rate_may_be_a_tensor_and_zero_is_the_identity():
    with tf.Graph().as_default():
        x = tf.ones([640])
        assert fused.dropout(x, 0.0) is x
        rate = tf.placeholder(tf.float32, [])
        y = fused.dropout(x, rate)
        with tf.Session() as session:
            np.testing.assert_array_equal(session.run(y, {rate: 0.0}), np.ones(640))
            assert 200 < np.count_nonzero(session.run(y, {rate: 0.5})) < 440
            with pytest.raises(tf.errors.InvalidArgumentError, match="rate must be in"):
                session.run(y, {rate: 1.0})


# ------------------------------------------------------------------------------------------ whole encoder

def test_encoder_loss_and_every_gradient_equal_the_composite_graph():
    """A 2-layer encoder + span head without dropout: the same loss and the same gradient for every variable
    (LayerNorm's residual path, the mask's broadcast, GELU) from the native and the composite graphs."""
    config = ModelConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=24, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
    rng = np.random.RandomState(6)
    ids = rng.randint(1, 50, size=(3, 24)).astype(np.int32)
    mask = (np.arange(24)[None, :] < np.array([24, 17, 9])[:, None]).astype(np.int32)
    features = {"input_ids": ids * mask, "input_mask": mask, "segment_ids": (np.arange(24) >= 6)[None].repeat(3, 0)
                .astype(np.int32), "start_position": np.array([7, 8, 6], np.int32),
                "end_position": np.array([9, 12, 6], np.int32)}

    def build():
        tensors = {key: tf.constant(value) for key, value in features.items()}
        output = build_encoder(config, tensors["input_ids"], tensors["input_mask"], tensors["segment_ids"], True,
                               kernels="fused", compute_dtype="float32")
        _, loss = build_head("span", output, tensors, None, config.initializer_range, True)
        variables = tf.trainable_variables()
        return [loss] + [tf.convert_to_tensor(g) for g in tf.gradients(loss, variables) if g is not None]

    native_values, composite_values = both_forms(build)
    assert len(native_values) > 20
    assert_pairs_close(native_values, composite_values, atol=2e-6, rtol=1e-4)


def test_training_step_with_dropout_uses_only_native_elementwise_ops():
    """The fused fp32 training graph holds the native op for every site (no stock dropout or LayerNorm chain)."""
    config = ModelConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=16)
    with tf.Graph().as_default() as graph:
        ids = tf.ones([2, 16], tf.int32)
        output = build_encoder(config, ids, ids, tf.zeros_like(ids), True, kernels="fused", compute_dtype="float32")
        tf.gradients(tf.reduce_sum(output.sequence_output), tf.trainable_variables())
        types = {op.type for op in graph.get_operations() if "/layer_" in op.name and "Initializer" not in op.name}
        assert {"TfMrcGelu", "TfMrcGeluGrad", "TfMrcMaskedSoftmax", "TfMrcMaskedSoftmaxGrad", "TfMrcLayerNorm",
                "TfMrcLayerNormGrad", "TfMrcDropout", "TfMrcDropoutGrad"} <= types
        assert not types & {"RandomUniform", "Softmax", "Tanh"}


# ------------------------------------------------------------------------------------------------ fallbacks

def test_non_float32_and_reference_kernels_and_a_gpu_use_no_native_op(monkeypatch):
    with tf.Graph().as_default() as graph:
        fused.gelu(tf.zeros([4], tf.float16), "tanh")
        fused.layer_norm(tf.zeros([2, 4], tf.float16), tf.ones([4]), tf.zeros([4]), 1e-12)
        ops.gelu(tf.zeros([4]), "tanh", kernels="reference")
        ops.dropout(tf.zeros([4]), 0.1, kernels="reference")
        assert native_types(graph) == []
    monkeypatch.setitem(native._state, "gpu", True)
    with tf.Graph().as_default() as graph:
        fused.gelu(tf.zeros([4]), "tanh")
        fused.dropout(tf.zeros([4]), 0.1)
        assert native_types(graph) == []
        assert "GPU" in native.status()


PROBE = """
from tf_mrc.compat import tf
from tf_mrc.ops import fused, native
with tf.Graph().as_default() as graph:
    fused.gelu(tf.zeros([4]), "tanh")
    print(sorted({op.type for op in graph.get_operations()} & {"TfMrcGelu", "Tanh"}))
print(native.status())
"""


FAILING_COMPILER = """#!/bin/sh
if [ "$1" = --version ]; then echo "fake-c++ 1.0"; exit 0; fi
echo "kernels.cc:1:1: error: this compiler always fails" >&2
exit 1
"""


@pytest.mark.parametrize("environment, expected", [
    ({"CXX": "/nonexistent/g++"}, "unavailable (no C++ compiler"),
    ({"CXX": "{tmp}/fake-c++"}, "unavailable ({tmp}/fake-c++ failed (kernels.cc:1:1: error: this compiler"),
    ({"TF_MRC_NATIVE_KERNELS": "0"}, "off (TF_MRC_NATIVE_KERNELS=0)"),
])
def test_without_the_library_the_composite_ops_run_and_the_log_says_why(tmp_path, environment, expected):
    compiler = tmp_path / "fake-c++"
    compiler.write_text(FAILING_COMPILER)
    compiler.chmod(0o755)
    environment = {key: value.format(tmp=tmp_path) for key, value in environment.items()}
    expected = expected.format(tmp=tmp_path)
    env = dict(os.environ, TF_MRC_HOME=str(tmp_path), PYTHONPATH=ROOT, **environment)
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=300)
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert lines[0] == "['Tanh']"
    assert lines[1].startswith(expected) and lines[1].endswith("the composite fused kernels run")
    if "fake-c++" in environment.get("CXX", ""):  # a failed build is not tried again on every run
        again = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=300)
        assert "this build failed before, see %s" % tmp_path in again.stdout.decode().splitlines()[1]


@pytest.mark.skipif(IS_TF1, reason="the resource-variable AdamW op exists on TF 2 only (see kernels.cc)")
def test_resource_adamw_copies_a_buffer_that_a_reader_still_holds():
    """A read of the variable taken before the update keeps its value (the op copies a shared buffer first)."""
    with tf.Graph().as_default():
        var = tf.get_variable("w", initializer=tf.ones([1000]), use_resource=True)
        m = tf.get_variable("m", initializer=tf.zeros([1000]), use_resource=True)
        v = tf.get_variable("v", initializer=tf.zeros([1000]), use_resource=True)
        before = var.read_value()
        with tf.control_dependencies([before]):
            update = native.apply_adamw(var, m, v, tf.ones([1000]), 0.1, 0.0, 1.0, 0.9, 0.999, 1e-6, True)
        with tf.control_dependencies([update]):
            after = var.read_value()
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            old, new = session.run([before, after])
        np.testing.assert_array_equal(old, np.ones(1000))
        np.testing.assert_allclose(new, 1.0 - 0.1 * 0.1 / (np.sqrt(0.001) + 1e-6), rtol=1e-5)


# ------------------------------------------------------------------------------------------------- bfloat16

def bf16_cases():
    rng = np.random.RandomState(7)
    x, upstream = (3.0 * rng.randn(33, 700)).astype(np.float32), rng.randn(33, 700).astype(np.float32)
    scores, key_mask = (4.0 * rng.randn(2, 3, 5, 40)).astype(np.float32), (rng.rand(2, 1, 40) > 0.3)
    gamma, beta = (1.0 + 0.3 * rng.randn(700)).astype(np.float32), rng.randn(700).astype(np.float32)

    def bf16(value):
        return tf.cast(tf.constant(value), tf.bfloat16)

    def gradients(y, inputs, dy):
        return [tf.cast(g, tf.float32) for g in tf.gradients(y, inputs, dy)]

    def gelu(form):
        def build():
            x_t = bf16(x)
            y = fused.gelu(x_t, form)
            return [tf.cast(y, tf.float32)] + gradients(y, [x_t], bf16(upstream))
        return build

    def softmax():
        s = bf16(scores)
        p = fused.masked_softmax(s, tf.constant(key_mask.astype(np.float32)), 0.125)
        return [tf.cast(p, tf.float32)] + gradients(p, [s], bf16(scores))

    def layer_norm():
        x_t, residual = bf16(x), bf16(upstream)
        y = fused.layer_norm(x_t, tf.constant(gamma), tf.constant(beta), 1e-12, residual)
        return [y] + gradients(y, [x_t, residual], tf.constant(upstream))

    return {"gelu_tanh": gelu("tanh"), "gelu_erf": gelu("erf"), "gelu_sigmoid": gelu("sigmoid"),
            "softmax": softmax, "layer_norm": layer_norm}


@pytest.mark.skipif(IS_TF1, reason="bf16 compute needs TF 2")
@pytest.mark.parametrize("case", ["gelu_tanh", "gelu_erf", "gelu_sigmoid", "softmax", "layer_norm"])
def test_bfloat16_ops_equal_the_composite_ones_to_a_bf16_rounding(case):
    """bf16 in, fp32 arithmetic, bf16 out (LayerNorm: fp32 out) in both forms: results differ at most by the
    last bf16 bit (2^-8 relative) where the two spellings round differently."""
    native_values, composite_values = both_forms(bf16_cases()[case])
    for native_value, composite_value in zip(native_values, composite_values):
        scale = np.abs(composite_value).max()
        np.testing.assert_allclose(native_value, composite_value, rtol=2.0 ** -7, atol=scale * 2.0 ** -12)
        if np.array_equal(session_free_bf16(composite_value), composite_value):  # a bf16 output: mostly identical
            assert np.mean(native_value != composite_value) < 0.1


@pytest.mark.skipif(IS_TF1, reason="bf16 compute needs TF 2")
def test_bfloat16_dropout_scales_the_kept_values_in_bf16():
    x = np.linspace(-4.0, 4.0, 6400).astype(np.float32)
    with tf.Graph().as_default() as graph:
        x_t = tf.cast(tf.constant(x), tf.bfloat16)
        y = fused.dropout(x_t, 0.1)
        dx = tf.gradients(y, x_t, tf.ones_like(y))[0]
        assert y.dtype == tf.bfloat16 and native_types(graph) == ["TfMrcDropout", "TfMrcDropoutGrad"]
        with tf.Session() as session:
            y_value, dx_value, x_bf16 = session.run([tf.cast(t, tf.float32) for t in (y, dx, x_t)])
    kept = dx_value != 0
    assert 0.85 < kept.mean() < 0.95
    expected = session_free_bf16(x_bf16[kept] / np.float32(0.9))
    np.testing.assert_array_equal(y_value[kept], expected)
    np.testing.assert_array_equal(y_value[~kept], 0.0)


def session_free_bf16(values):
    """float32 -> bfloat16 (round to nearest even) -> float32 in NumPy: TF's Cast, by its definition."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


# ------------------------------------------------------------------------------------ dropped attention

@pytest.mark.parametrize("keys", [7, 64])
def test_dropped_attention_matches_numpy_and_keeps_no_dropped_probabilities(keys):
    """context = dropout(softmax(s * scale + bias)) @ V and its gradients for s and V, recomputed in float64 from
    the op's own keep mask; the backward pass reads the probabilities and the mask, never the dropped
    probabilities. 64 keys take the one-op softmax + dropout pair, 7 the separate ops."""
    rng = np.random.RandomState(8)
    scores = (3.0 * rng.randn(2, 3, 7, keys)).astype(np.float32)
    value, upstream = rng.randn(2, 3, keys, 5).astype(np.float32), rng.randn(2, 3, 7, 5).astype(np.float32)
    mask = (np.arange(keys)[None, None, :] < np.array([keys, 4])[:, None, None]).astype(np.float32)
    rate, scale = 0.3, 0.5
    with tf.Graph().as_default() as graph:
        s, v = tf.constant(scores), tf.constant(value)
        context = ops.dropped_attention(s, tf.constant(mask), scale, rate, v)
        forward = set(graph.get_operations())
        dscores, dvalue = tf.gradients(context, [s, v], tf.constant(upstream))
        (dropout_op,) = [op for op in forward if op.type in ("TfMrcDropout", "TfMrcMaskedSoftmaxDropout")]
        assert (dropout_op.type == "TfMrcMaskedSoftmaxDropout") == (keys == 64)
        mask_output = dropout_op.outputs[-1]
        backward = [op for op in graph.get_operations() if op not in forward]
        assert not [op.name for op in backward if dropout_op.outputs[0] in list(op.inputs)]
        with tf.Session() as session:
            values = session.run([context, dscores, dvalue, mask_output])
    context_value, dscores_value, dvalue_value, bits = values
    keep = ((bits[:, None] >> np.arange(8)) & 1).reshape(-1)[:scores.size].reshape(scores.shape).astype(np.float64)
    logits = scores * scale + (1.0 - mask[:, None]) * -10000.0
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dropped = p * keep / (1 - rate)
    np.testing.assert_allclose(context_value, dropped @ value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dvalue_value, np.swapaxes(dropped, -1, -2) @ upstream, rtol=1e-5, atol=1e-6)
    dprobs = (upstream @ np.swapaxes(value, -1, -2)) * keep / (1 - rate)
    expected = scale * p * (dprobs - (dprobs * p).sum(-1, keepdims=True))
    np.testing.assert_allclose(dscores_value, expected, rtol=1e-5, atol=1e-6)
    assert 0.5 < keep.mean() < 0.9


@pytest.mark.skipif(IS_TF1 or "avx512bw" not in open("/proc/cpuinfo").read(),
                    reason="the default build here already is the portable one (or the legacy leg: once is enough)")
def test_the_portable_build_passes_the_dropout_tests(tmp_path):
    """The dropout and attention tests again with the library built without AVX-512 (the plain C++ loops that
    AVX2-only machines run)."""
    compiler = tmp_path / "g++"
    compiler.write_text('#!/bin/sh\nexec g++ "$@" -mno-avx512f -mno-avx512bw\n')
    compiler.chmod(0o755)
    env = dict(os.environ, CXX=str(compiler), TF_MRC_HOME=str(tmp_path / "home"), PYTHONPATH=ROOT)
    selection = "(dropout or dropped or library_builds) and not portable"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", selection],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    output = result.stdout.decode()
    assert result.returncode == 0, output[-3000:]
    assert " passed" in output and "failed" not in output
    assert list((tmp_path / "home" / "native").glob("*/tf_mrc_kernels.so"))


def test_global_norm_of_many_tensors_equals_tf_global_norm_and_numpy():
    rng = np.random.RandomState(9)
    values = [rng.randn(*shape).astype(np.float32) for shape in [(3,), (300, 700), (65536,), (65537, 2), (1, 1)]]
    with tf.Graph().as_default():
        tensors = [tf.constant(v) for v in values]
        ours, theirs = native.global_norm(tensors), tf.global_norm(tensors)
        with tf.Session() as session:
            ours, theirs = session.run([ours, theirs])
    expected = np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in values))
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
