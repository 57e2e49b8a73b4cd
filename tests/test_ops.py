"""tf_mrc.ops: every backend against NumPy (values and analytic gradients) and against the reference backend;
what the fused backward keeps; backend resolution and its errors; attention-dropout placement.

Tolerances. fp32 (tight): values within 1e-6 + 1e-5 * |expected| of float64 NumPy, gradients within
3e-5 + 1e-5 * |expected| (autodiff of the reference tanh-GELU formula is off by 1e-5 in fp32). fp16 (loose):
within 1e-2 + 1e-2 * |expected|, because the reference backend computes in fp16 (measured worst: 7e-3, the
sigmoid GELU's gradient); the fused backend is held separately to fp32-computed accuracy on GELU values.
"""
import importlib.util
import pathlib
import sys
import types

import numpy as np
import pytest

from conftest import numpy_gelu
from tf_mrc import compat, ops
from tf_mrc.compat import IS_TF1, blocksparse_available, tf
from tf_mrc.ops import fused, native, reference

BLOCKSPARSE = pytest.param("blocksparse", marks=pytest.mark.skipif(
    not blocksparse_available(), reason="blocksparse needs TF 1.13 + CUDA 10.0 and a GPU; not importable here"))
# "composite" is the fused backend with its native C++ ops turned off (tf_mrc.ops.native.off): both forms of the
# fused ops must match the references, and on this CPU "fused" runs the native ones.
BACKENDS = ["reference", "fused", "composite", BLOCKSPARSE]
FAST_BACKENDS = ["fused", "composite", BLOCKSPARSE]
FORMS = ["tanh", "erf", "sigmoid"]
DTYPES = [np.float32, np.float16]
TOLERANCE = {  # (values atol, rtol), (gradients atol, rtol)
    np.float32: ((1e-6, 1e-5), (3e-5, 1e-5)),
    np.float16: ((1e-2, 1e-2), (1e-2, 1e-2)),
}


def kernels_of(backend):
    return "fused" if backend == "composite" else backend


@pytest.fixture(autouse=True)
def native_switch(request):
    """Tests parametrized with backend="composite" or native=False build their graphs with native.off()."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if params.get("backend") == "composite" or params.get("native") is False:
        with native.off():
            yield
    else:
        yield


def numpy_masked_softmax(scores, mask, scale, upstream):
    """Probabilities and d(sum(upstream * p))/d(scores) in float64."""
    if mask.ndim == 3:
        mask = mask[:, None]
    logits = scores * scale + (1.0 - mask) * -10000.0
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return p, scale * p * (upstream - (upstream * p).sum(axis=-1, keepdims=True))


def run(build):
    """Build in a fresh graph and evaluate what ``build`` returns."""
    graph = tf.Graph()
    with graph.as_default():
        fetches = build()
        with tf.Session(graph=graph) as session:
            return session.run(fetches)


def assert_close(actual, expected, tolerance):
    atol, rtol = tolerance
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, atol=atol, rtol=rtol)


def gelu_inputs(dtype, seed=0):
    rng = np.random.RandomState(seed)
    return (2.0 * rng.randn(16, 96)).astype(dtype), rng.randn(16, 96).astype(dtype)


def softmax_inputs(dtype, mask_kind, seed=0):
    """Scores [B=2, N=3, T=9, T]; a key mask [B, 1, T] from lengths, or a random full [B, T, T] mask within
    those lengths, every row keeping its first key."""
    rng = np.random.RandomState(seed)
    batch, heads, length = 2, 3, 9
    scores = (4.0 * rng.randn(batch, heads, length, length)).astype(dtype)
    upstream = rng.randn(batch, heads, length, length).astype(dtype)
    key_mask = (np.arange(length)[None, None, :] < np.array([9, 5])[:, None, None]).astype(np.float32)
    if mask_kind == "key":
        mask = key_mask
    else:
        mask = (rng.rand(batch, length, length) > 0.3).astype(np.float32) * key_mask
        mask[:, :, 0] = 1.0
    return scores, mask, upstream


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gelu_value_and_gradient_match_numpy(backend, form, dtype):
    x, upstream = gelu_inputs(dtype)

    def build():
        x_t = tf.constant(x)
        y = ops.gelu(x_t, form, kernels=kernels_of(backend))
        return y, tf.gradients(y, x_t, grad_ys=tf.constant(upstream))[0]

    y, dx = run(build)
    assert y.dtype == dtype and dx.dtype == dtype
    expected_y, derivative = numpy_gelu(x.astype(np.float64), form)
    value_tol, grad_tol = TOLERANCE[dtype]
    assert_close(y, expected_y, value_tol)
    assert_close(dx, derivative * upstream.astype(np.float64), grad_tol)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gelu_matches_reference_backend_fp32(backend, form):
    x, upstream = gelu_inputs(np.float32, seed=1)

    def build():
        x_t = tf.constant(x)
        outputs = []
        for kernels in ("reference", kernels_of(backend)):
            y = ops.gelu(x_t, form, kernels=kernels)
            outputs.append((y, tf.gradients(y, x_t, grad_ys=tf.constant(upstream))[0]))
        return outputs

    (ref_y, ref_dx), (y, dx) = run(build)
    value_tol, grad_tol = TOLERANCE[np.float32]
    assert_close(y, ref_y, value_tol)
    assert_close(dx, ref_dx, grad_tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_kind", ["key", "full"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_softmax_value_and_gradient_match_numpy(backend, mask_kind, dtype):
    scores, mask, upstream = softmax_inputs(dtype, mask_kind)

    def build():
        scores_t = tf.constant(scores)
        p = ops.masked_softmax(scores_t, tf.constant(mask), 0.125, kernels=kernels_of(backend))
        return p, tf.gradients(p, scores_t, grad_ys=tf.constant(upstream))[0]

    p, dscores = run(build)
    assert p.dtype == dtype and dscores.dtype == dtype
    expected_p, expected_dscores = numpy_masked_softmax(scores.astype(np.float64), mask, 0.125,
                                                        upstream.astype(np.float64))
    value_tol, grad_tol = TOLERANCE[dtype]
    assert_close(p, expected_p, value_tol)
    assert_close(dscores, expected_dscores, grad_tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_masked_row_behaves_like_bert(backend):
    """A row with every key masked: all logits sit near -10000, so BERT returns softmax(scores * scale) of that
    row up to fp32 rounding there (spacing 2**-10), not NaN and not zeros."""
    scores, mask, _ = softmax_inputs(np.float32, "full", seed=4)
    mask[1, 2, :] = 0.0
    p = run(lambda: ops.masked_softmax(tf.constant(scores), tf.constant(mask), 0.125, kernels=kernels_of(backend)))
    row = scores[1, :, 2].astype(np.float64) * 0.125
    expected = np.exp(row - row.max(axis=-1, keepdims=True))
    expected /= expected.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(p[1, :, 2], expected, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("mask_kind", ["key", "full"])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_masked_softmax_matches_reference_backend_fp32(backend, mask_kind):
    scores, mask, upstream = softmax_inputs(np.float32, mask_kind, seed=2)

    def build():
        scores_t, mask_t = tf.constant(scores), tf.constant(mask)
        outputs = []
        for kernels in ("reference", kernels_of(backend)):
            p = ops.masked_softmax(scores_t, mask_t, 0.125, kernels=kernels)
            outputs.append((p, tf.gradients(p, scores_t, grad_ys=tf.constant(upstream))[0]))
        return outputs

    (ref_p, ref_dscores), (p, dscores) = run(build)
    value_tol, grad_tol = TOLERANCE[np.float32]
    assert_close(p, ref_p, value_tol)
    assert_close(dscores, ref_dscores, grad_tol)


def test_fused_masked_softmax_passes_no_gradient_to_mask():
    scores, mask, _ = softmax_inputs(np.float32, "key")
    with tf.Graph().as_default():
        mask_t = tf.constant(mask)
        p = fused.masked_softmax(tf.constant(scores), mask_t, 0.125)
        assert tf.gradients(p, mask_t) == [None]


@pytest.mark.parametrize("form", FORMS)
def test_fused_half_precision_gelu_is_computed_in_fp32(form):
    """fp16 in, fp16 out, computed in fp32: mean error a quarter of an fp16 ulp (correct rounding's own),
    where fp16 arithmetic (the reference backend) is off by 0.6-50 ulps on average. The worst case is half an
    ulp on TF 2.15; TF 1.13's CPU fp32 sigmoid is accurate to ~1e-7 absolute only, which costs up to ~8 ulps
    on tiny outputs, so the bound on the worst case applies to TF 2 only."""
    x, _ = gelu_inputs(np.float16, seed=3)

    def build():
        x_t = tf.constant(x)
        return [ops.gelu(x_t, form, kernels=kernels) for kernels in ("fused", "reference")]

    fused_y, reference_y = run(build)
    expected, _ = numpy_gelu(x.astype(np.float64), form)
    ulp = np.spacing(np.abs(expected).astype(np.float16)).astype(np.float64)
    fused_ulps = np.abs(fused_y.astype(np.float64) - expected) / ulp
    assert fused_ulps.mean() <= 0.35
    assert (np.abs(reference_y.astype(np.float64) - expected) / ulp).mean() > 0.5
    if not IS_TF1:
        assert fused_ulps.max() <= 0.51


def load_bench():
    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_kernels.py"
    spec = importlib.util.spec_from_file_location("bench_kernels", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()  # its graph analysis and peak measure are the ones under test here


def gradient_reads(output, inputs, upstream):
    """Forward tensors read by the ops computing d(output)/d(inputs) (the bench's "saved"), and those ops."""
    forward_ops = set(output.graph.get_operations())
    grads = tf.gradients(output, inputs, grad_ys=upstream)
    return bench.forward_tensors_read_by_backward(grads, forward_ops, upstream)


def depends_on(op, tensor):
    """Whether ``op`` runs after ``tensor`` is computed (through data or control edges)."""
    seen, stack = set(), [op]
    while stack:
        current = stack.pop()
        if current is tensor.op:
            return True
        if current not in seen:
            seen.add(current)
            stack.extend(t.op for t in current.inputs)
            stack.extend(current.control_inputs)
    return False


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float16])
@pytest.mark.parametrize("form", FORMS)
def test_fused_gelu_backward_keeps_only_its_input(form, dtype, native):
    with tf.Graph().as_default():
        x = tf.placeholder(dtype, [64, 3072])
        upstream = tf.placeholder(dtype, [64, 3072])
        reads, readers = gradient_reads(fused.gelu(x, form), [x], upstream)
        assert reads == {x}
        assert any(op.type == "TfMrcGeluGrad" for op in readers) == (native and dtype == tf.float32)
        # ... and reads it only once the upstream gradient exists, so the recompute cannot run early
        # (during the forward pass) and keep its full-size result alive until backprop.
        assert readers and all(depends_on(op, upstream) for op in readers)
        # The check can fail: autodiff of the reference formula keeps tanh(.) and friends.
        reference_reads, _ = gradient_reads(reference.gelu(x, form), [x], upstream)
        assert reference_reads - {x}


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float16])
def test_fused_softmax_backward_keeps_only_its_output(dtype, native):
    with tf.Graph().as_default():
        scores = tf.placeholder(dtype, [2, 12, 64, 64])
        upstream = tf.placeholder(dtype, [2, 12, 64, 64])
        mask = tf.placeholder(tf.float32, [2, 1, 64])
        p = fused.masked_softmax(scores, mask, 0.125)
        reads, readers = gradient_reads(p, [scores], upstream)
        assert len(reads) == 1
        (kept,) = reads
        assert kept.dtype == dtype and kept.shape.as_list() == [2, 12, 64, 64] and kept is not scores
        # the probabilities, stored in the input dtype: the native op's own output where it runs (fp32 here)
        uses_native = native and dtype == tf.float32
        assert kept.op.type in (("TfMrcMaskedSoftmax",) if uses_native else ("Cast", "Softmax"))
        assert all(depends_on(op, upstream) for op in readers)


def test_fused_gelu_lowers_the_measured_step_peak():
    """Two chained tanh GELUs on [256, 1024] fp32 (1 MiB a tensor), forward + backward, peak from TF's
    allocation records (the bench's measure): autodiff keeps four tensors a layer, fused one."""
    peaks = {}
    for kernels in ("reference", "fused"):
        graph = tf.Graph()
        with graph.as_default():
            x = tf.get_variable("x", initializer=tf.constant(np.random.RandomState(0).randn(256, 1024)
                                                             .astype(np.float32)))
            y = ops.gelu(ops.gelu(x, "tanh", kernels), "tanh", kernels)
            fetch = tf.reduce_sum(tf.gradients(y, [x], grad_ys=tf.ones_like(y))[0])
            with tf.Session(graph=graph, config=tf.ConfigProto(inter_op_parallelism_threads=1)) as session:
                session.run(tf.global_variables_initializer())
                metadata = tf.RunMetadata()
                session.run(fetch, options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
                            run_metadata=metadata)
                peaks[kernels] = bench.step_peak_bytes(metadata)
    tensor = 256 * 1024 * 4
    assert peaks["reference"] >= 6 * tensor
    assert peaks["fused"] <= 0.75 * peaks["reference"]


@pytest.mark.skipif(blocksparse_available(), reason="blocksparse imports here")
def test_auto_resolves_to_fused_without_blocksparse():
    assert ops.resolve_backend("auto") is fused
    assert ops.resolve_backend("fused") is fused
    assert ops.resolve_backend("reference") is reference


@pytest.mark.skipif(blocksparse_available(), reason="blocksparse imports here")
def test_blocksparse_here_raises_one_line_error():
    for attempt in (lambda: ops.resolve_backend("blocksparse"),
                    lambda: ops.gelu(tf.zeros([2, 3]), "tanh", kernels="blocksparse"),
                    lambda: importlib.import_module("tf_mrc.ops.blocksparse_backend")):
        with tf.Graph().as_default(), pytest.raises(RuntimeError) as error:
            attempt()
        message = str(error.value)
        assert "\n" not in message and "--kernels=blocksparse" in message and "--kernels=fused" in message


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocksparse_mapping_with_a_stand_in_for_the_kernels(monkeypatch, dtype):
    """The kernels need a GPU, so here a stand-in with blocksparse's documented semantics (fast_gelu is
    swish(x, alpha=1.702) = x * sigmoid(1.702 x); softmax(x, scale) is softmax(x * scale), per
    transformer.py's masked_softmax_test) checks our glue: which GELU forms reach fast_gelu, and that adding
    the mask bias before the kernel's scale gives BERT's masked softmax and gradient."""
    calls = []

    def fast_gelu(x):
        calls.append("fast_gelu")
        return x * tf.sigmoid(1.702 * x)

    def softmax(x, scale):
        calls.append("softmax")
        assert isinstance(scale, float)
        return tf.nn.softmax(x * scale)

    stand_in = types.SimpleNamespace(fast_gelu=fast_gelu, softmax=softmax)
    monkeypatch.setattr(compat, "blocksparse_ops", lambda: stand_in)
    sys.modules.pop("tf_mrc.ops.blocksparse_backend", None)
    try:
        backend = importlib.import_module("tf_mrc.ops.blocksparse_backend")
        x, upstream = gelu_inputs(dtype)
        for form in FORMS:
            del calls[:]
            y = run(lambda: backend.gelu(tf.constant(x), form))
            assert calls == (["fast_gelu"] if form == "sigmoid" else [])
            assert_close(y, numpy_gelu(x.astype(np.float64), form)[0], TOLERANCE[dtype][0])
        for mask_kind in ("key", "full"):
            scores, mask, upstream = softmax_inputs(dtype, mask_kind)

            def build():
                scores_t = tf.constant(scores)
                p = backend.masked_softmax(scores_t, tf.constant(mask), np.float32(0.125))
                return p, tf.gradients(p, scores_t, grad_ys=tf.constant(upstream))[0]

            p, dscores = run(build)
            expected_p, expected_dscores = numpy_masked_softmax(scores.astype(np.float64), mask, 0.125,
                                                                upstream.astype(np.float64))
            assert_close(p, expected_p, TOLERANCE[dtype][0])
            assert_close(dscores, expected_dscores, TOLERANCE[dtype][1])
    finally:
        sys.modules.pop("tf_mrc.ops.blocksparse_backend", None)


def test_invalid_names_raise_value_error():
    with pytest.raises(ValueError, match="--kernels must be one of"):
        ops.resolve_backend("cuda")
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="GELU form"):
            ops.gelu(tf.zeros([2]), "relu")
        with pytest.raises(ValueError, match="site"):
            ops.attention_dropout(tf.zeros([2]), 0.1, "scores")


@pytest.mark.parametrize("placement", ["probs", "context"])
def test_attention_dropout_applies_only_at_its_placement(placement):
    def build():
        x = tf.ones([64, 64])
        dropped = {site: ops.attention_dropout(x, 0.5, site, placement) for site in ops.ATTENTION_DROPOUT_SITES}
        assert all(dropped[site] is x for site in ops.ATTENTION_DROPOUT_SITES if site != placement)
        assert ops.attention_dropout(x, 0.0, placement, placement) is x
        rate = tf.constant(0.5)
        return dropped[placement], ops.attention_dropout(x, rate, placement, placement)

    for values in run(build):
        # inverted dropout: kept entries scaled by 1 / (1 - rate), about half of 4096 dropped
        assert set(np.unique(values)) <= {0.0, 2.0}
        assert 1500 < np.count_nonzero(values == 0.0) < 2600


def test_attention_dropout_defaults_to_bert_placement():
    with tf.Graph().as_default():
        x = tf.ones([4, 4])
        assert ops.attention_dropout(x, 0.1, "context") is x
        assert ops.attention_dropout(x, 0.1, "probs") is not x


# ---------------------------------------------------------------------------------------------------------------
# LayerNorm (+ residual)
# ---------------------------------------------------------------------------------------------------------------

def numpy_layer_norm(total, gamma, beta, upstream, epsilon=1e-12):
    """LayerNorm over the last axis and the gradients of sum(upstream * y) w.r.t. its input, gamma and beta, in
    float64 from the definition (dx from the chain rule through the mean and the variance)."""
    width = total.shape[-1]
    mean = total.mean(-1, keepdims=True)
    centered = total - mean
    variance = (centered ** 2).mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(variance + epsilon)
    xhat = centered * rstd
    dxhat = upstream * gamma
    dvariance = (dxhat * centered).sum(-1, keepdims=True) * -0.5 * rstd ** 3
    dmean = -(dxhat * rstd).sum(-1, keepdims=True) + dvariance * (-2.0 * centered).mean(-1, keepdims=True)
    dx = dxhat * rstd + dvariance * 2.0 * centered / width + dmean / width
    return xhat * gamma + beta, dx, (upstream * xhat).sum(0), upstream.sum(0)


def layer_norm_inputs(dtype, seed=0):
    rng = np.random.RandomState(seed)
    x = (3.0 * rng.randn(12, 64) + rng.randn(12, 1)).astype(dtype)
    residual = rng.randn(12, 64).astype(dtype)
    gamma, beta = (1.0 + 0.3 * rng.randn(64)).astype(np.float32), rng.randn(64).astype(np.float32)
    return x, residual, gamma, beta, rng.randn(12, 64).astype(np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_norm_value_and_gradients_match_numpy(backend, with_residual, dtype):
    x, residual, gamma, beta, upstream = layer_norm_inputs(dtype)

    def build():
        inputs = [tf.constant(x), tf.constant(residual), tf.constant(gamma), tf.constant(beta)]
        y = ops.layer_norm(inputs[0], inputs[2], inputs[3], 1e-12, inputs[1] if with_residual else None,
                           kernels=kernels_of(backend))
        grads = tf.gradients(y, inputs, grad_ys=tf.constant(upstream))
        return [y] + [tf.zeros([]) if g is None else g for g in grads]

    y, dx, dresidual, dgamma, dbeta = run(build)
    assert y.dtype == np.float32 and dx.dtype == dtype
    total = x.astype(np.float64) + (residual.astype(np.float64) if with_residual else 0.0)
    expected = numpy_layer_norm(total, gamma.astype(np.float64), beta.astype(np.float64), upstream.astype(np.float64))
    value_tol, grad_tol = TOLERANCE[dtype]
    assert_close(y, expected[0], value_tol)
    assert_close(dx, expected[1], grad_tol)
    if with_residual:
        assert_close(dresidual, expected[1], grad_tol)
    assert_close(dgamma, expected[2], (grad_tol[0] * 10, grad_tol[1]))  # sums over 12 rows
    assert_close(dbeta, expected[3], (grad_tol[0] * 10, grad_tol[1]))


@pytest.mark.parametrize("with_residual", [False, True])
def test_fused_layer_norm_passes_a_numeric_gradient_check(with_residual):
    """tf.test.compute_gradient's finite differences in float64 against the op's own gradient, every input."""
    x, residual, gamma, beta, _ = layer_norm_inputs(np.float64, seed=2)
    x, residual = x[:3, :8], residual[:3, :8]
    gamma, beta = gamma[:8].astype(np.float64), beta[:8].astype(np.float64)
    with tf.Graph().as_default(), tf.Session():
        values = [x, residual, gamma, beta]
        inputs = [tf.constant(value) for value in values]
        y = fused.layer_norm(inputs[0], inputs[2], inputs[3], 1e-12, inputs[1] if with_residual else None)
        for tensor, value in zip(inputs, values):
            if tensor is inputs[1] and not with_residual:
                continue
            analytic, numeric = tf.test.compute_gradient(tensor, list(value.shape), y, [3, 8], x_init_value=value)
            np.testing.assert_allclose(analytic, numeric, atol=1e-6, rtol=1e-6)
            assert np.abs(analytic).max() > 0.1


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_fused_layer_norm_backward_keeps_only_the_normalized_input_and_rstd(dtype, native):
    if dtype == tf.bfloat16 and IS_TF1:
        pytest.skip("bf16 compute needs TF 2")
    with tf.Graph().as_default():
        x, residual = tf.placeholder(dtype, [64, 768]), tf.placeholder(dtype, [64, 768])
        gamma, beta = tf.placeholder(tf.float32, [768]), tf.placeholder(tf.float32, [768])
        upstream = tf.placeholder(tf.float32, [64, 768])
        y = fused.layer_norm(x, gamma, beta, 1e-12, residual)
        reads, readers = gradient_reads(y, [x, residual, gamma], upstream)
        # xhat and rstd per row: [64] from the native op (fp32 and bf16), [64, 1] from the composite's keepdims
        rstd_shape = [64] if native else [64, 1]
        assert sorted(t.shape.as_list() for t in reads if t is not gamma) == [rstd_shape, [64, 768]]
        assert all(t.dtype == tf.float32 for t in reads)
        assert all(depends_on(op, upstream) for op in readers)
        # The check can fail: autodiff of the reference ops keeps more (the input and its moments).
        reference_reads, _ = gradient_reads(reference.layer_norm(x, gamma, beta, 1e-12, residual),
                                            [x, residual, gamma], upstream)
        assert len(reference_reads - {gamma}) > 2


# ---------------------------------------------------------------------------------------------------------------
# oneDNN start-up decision
# ---------------------------------------------------------------------------------------------------------------

def test_onednn_choice_from_cpu_flags_with_the_user_winning(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow")  # as before TensorFlow loads
    environ = {}
    assert "set by tf_mrc" in compat.choose_onednn(environ, {"fma", "avx2"})
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    environ = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert "from the environment" in compat.choose_onednn(environ, {"avx2", "avx512_bf16"})
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    environ = {}
    assert "no AVX2" in compat.choose_onednn(environ, {"sse4_2"}) and environ == {}


def test_onednn_choice_is_too_late_once_tensorflow_is_loaded():
    environ = {}
    assert "before tf_mrc.compat" in compat.choose_onednn(environ, {"avx2"}) and environ == {}
