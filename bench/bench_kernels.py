"""Memory and time of one forward+backward pass of each fused op: reference vs composite vs fused (native).

    python bench/bench_kernels.py [--layers 2] [--repeats 5] [--dtypes float32,float16] [--batch 8] [--seq 512]
                                  [--cases softmax,gelu,layer_norm,dropout,attention]

Backends: reference (plain TF autodiff), composite (the fused backend with its native kernels off: tf.custom_gradient
chains of stock ops) and fused (the default: the native C++ kernels where they apply, i.e. fp32 / bf16 on CPU).
Cases: softmax over [B, N=12, T, T] scores with a [B, 1, T] padding mask (scale 1/8), GELU over [B*T, 3072]
(tanh form, google BERT's), LayerNorm of [B*T, 768] + a residual, dropout (rate 0.1) over [B, 12, T, T], each
applied --layers times in a chain; and attention: dropout(softmax(scores)) @ V with V [B, 12, T, 64], once per
layer on the same scores (the unit whose fused form keeps no dropped probabilities).
Inputs and the upstream gradient are variables, so they exist before the step and are not counted; the
upstream gradient is released only after the forward pass, as in a network. Each step computes the ops and their
gradient (tf.gradients with that upstream gradient) and fetches a scalar sum of the input gradient.

Memory, three figures:
  saved   bytes of the forward tensors the backward ops read, from the graph (gradient ops traced back to
          the forward graph; shape-only reads ignored). In a deep network this is what each layer keeps
          alive until backprop, the figure that decides the batch that fits.
  peak    most tensor bytes live at once during the step, from TF's allocation log:
          RunOptions(trace_level=FULL_TRACE) fills RunMetadata.step_stats with every op's
          allocation_records (time, +bytes on allocation, -bytes on release); summed in time order they give
          the bytes live at each instant. Checked on CPU with TF 1.13 and 2.15.
  alloc   the peak seen by the process's CPU allocator: tf.config.experimental.get_memory_info('CPU:0')
          ['peak'] after reset_memory_stats, minus the bytes in use before the step (variables). It works in
          graph mode on TF 2.15 CPU and also counts TF's own buffers, so it runs a little higher; TF 1.13 has
          no such call ('-').
Ops run one at a time (inter_op_parallelism_threads=1), so both peaks follow one sequential order.
Time: median wall time of --repeats untraced steps after one warm-up, the backends' steps alternating.
Single timings on this 2-core CPU swing 10-40 % between runs; compare the ratios, which come from one run.
"""
import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from tf_mrc import ops  # noqa: E402
from tf_mrc.compat import tf  # noqa: E402
from tf_mrc.ops import native  # noqa: E402

BACKENDS = ("reference", "composite", "fused")
SHAPE_ONLY_OPS = ("Shape", "ShapeN", "Rank", "Size")
MB = 1024.0 * 1024.0


def forward_tensors_read_by_backward(grads, forward_ops, upstream):
    """(tensors, readers): the forward tensors that the ops computing ``grads`` read, and those ops.
    Constants, the upstream gradient itself and reads by shape-only ops do not count."""
    read, readers, seen, stack = set(), [], set(), [g.op for g in grads]
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        for tensor in op.inputs:
            if tensor.op not in forward_ops:
                stack.append(tensor.op)
            elif op.type not in SHAPE_ONLY_OPS and tensor.op.type != "Const" and tensor is not upstream:
                read.add(tensor)
                readers.append(op)
    return read, readers


def tensor_bytes(tensor):
    return tensor.shape.num_elements() * tensor.dtype.size


def step_peak_bytes(run_metadata):
    """Most bytes live at once during a traced step, from the allocation records in its step_stats."""
    events = []
    for device in run_metadata.step_stats.dev_stats:
        for node in device.node_stats:
            for memory in node.memory:
                events.extend((r.alloc_micros, r.alloc_bytes) for r in memory.allocation_records)
    live = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # releases before allocations at one instant
        live += delta
        peak = max(peak, live)
    return peak


def allocator_peak_bytes(session, fetch):
    """Peak bytes the CPU allocator reached during one step above what was in use before it; None on TF 1.x."""
    experimental = getattr(getattr(tf, "config", None), "experimental", None)
    if experimental is None or not hasattr(experimental, "get_memory_info"):
        return None
    experimental.reset_memory_stats("CPU:0")
    before = experimental.get_memory_info("CPU:0")["current"]
    session.run(fetch)
    return experimental.get_memory_info("CPU:0")["peak"] - before


def build_case(case, backend, dtype, layers, batch=8, length=512):
    """The op applied ``layers`` times in a chain, each output feeding the next, on variable inputs with a
    variable upstream gradient. Returns (fetch, forward ops, gradient tensors, upstream)."""
    with (native.off() if backend == "composite" else contextlib.nullcontext()):
        return _build_case(case, "fused" if backend == "composite" else backend, dtype, layers, batch, length)


def _build_case(case, backend, dtype, layers, batch, length):
    def variable(name, shape, stddev=1.0):
        initializer = tf.random_normal_initializer(stddev=stddev, seed=len(name))
        return tf.get_variable(name, shape, dtype=dtype, initializer=initializer).value()

    lengths = np.random.RandomState(0).randint(length // 2, length + 1, size=batch)
    mask = tf.constant((np.arange(length)[None, None, :] < lengths[:, None, None]).astype(np.float32))
    if case == "attention":
        inputs = variable("scores", [batch, 12, length, length], stddev=4.0)
        value = variable("value", [batch, 12, length, 64])
        upstream = variable("upstream", [batch, 12, length, 64])
        output = tf.add_n([ops.dropped_attention(inputs * (1.0 + layer), mask, 0.125, 0.1, value, kernels=backend)
                           for layer in range(layers)])
    elif case == "dropout":
        inputs = output = variable("x", [batch, 12, length, length])
        upstream = variable("upstream", [batch, 12, length, length])
        for _ in range(layers):
            output = ops.dropout(output, 0.1, kernels=backend)
    elif case == "softmax":
        heads = 12
        inputs = output = variable("scores", [batch, heads, length, length], stddev=4.0)
        upstream = variable("upstream", [batch, heads, length, length])
        for _ in range(layers):
            output = ops.masked_softmax(output, mask, 0.125, kernels=backend)
    elif case == "gelu":
        inputs = output = variable("x", [batch * length, 3072], stddev=2.0)
        upstream = variable("upstream", [batch * length, 3072])
        for _ in range(layers):
            output = ops.gelu(output, "tanh", kernels=backend)
    else:
        inputs = output = variable("x", [batch * length, 768], stddev=2.0)
        residual = variable("residual", [batch * length, 768])
        gamma, beta = tf.ones([768]), tf.zeros([768])
        upstream = variable("upstream", [batch * length, 768])
        for _ in range(layers):
            output = tf.cast(ops.layer_norm(output, gamma, beta, 1e-12, residual, kernels=backend), dtype)
    with tf.control_dependencies([output]):  # as in a network, the gradient arrives after the forward pass
        upstream = tf.identity(upstream)
    forward_ops = set(tf.get_default_graph().get_operations())
    grads = tf.gradients(output, [inputs], grad_ys=upstream)
    return tf.reduce_sum(grads[0]), forward_ops, grads, upstream


def measure(case, dtype, layers, repeats, batch=8, length=512):
    """{backend: {saved, peak, alloc, time}}; the backends' timed steps alternate, so that load from other
    processes falls on both alike."""
    sessions, results = {}, {}
    config = tf.ConfigProto(inter_op_parallelism_threads=1)
    for backend in BACKENDS:
        graph = tf.Graph()
        with graph.as_default():
            fetch, forward_ops, grads, upstream = build_case(case, backend, dtype, layers, batch, length)
            kept, _ = forward_tensors_read_by_backward(grads, forward_ops, upstream)
            saved = sum(tensor_bytes(t) for t in kept)
            session = tf.Session(graph=graph, config=config)
            session.run(tf.global_variables_initializer())
            session.run(fetch)  # warm-up: kernels, grappler
            run_metadata = tf.RunMetadata()
            session.run(fetch, options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
                        run_metadata=run_metadata)
            results[backend] = {"saved": saved, "peak": step_peak_bytes(run_metadata),
                                "alloc": allocator_peak_bytes(session, fetch), "times": []}
            sessions[backend] = (session, fetch)
    for _ in range(repeats):
        for backend in BACKENDS:
            session, fetch = sessions[backend]
            start = time.time()
            session.run(fetch)
            results[backend]["times"].append(time.time() - start)
    for backend in BACKENDS:
        sessions[backend][0].close()
        results[backend]["time"] = float(np.median(results[backend]["times"]))
    return results


def megabytes(value):
    return "-" if value is None else "%.0f" % (value / MB)


def ratio(value, reference):
    return "-" if value is None or not reference else "%.2f" % (float(value) / reference)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="float32,float16")
    parser.add_argument("--layers", type=int, default=2,
                        help="apply each op this many times in a chain, so what one layer keeps for backprop "
                             "is still alive while the next runs, as in an encoder")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--cases", default="softmax,gelu,layer_norm,dropout,attention")
    args = parser.parse_args()
    print("forward+backward of %d chained layer(s); TF %s; MB = 2**20 bytes" % (args.layers, tf.VERSION))
    b, t = args.batch, args.seq
    labels = {"softmax": "softmax [%d,12,%d,%d]" % (b, t, t), "gelu": "gelu tanh [%d,3072]" % (b * t),
              "layer_norm": "layer_norm+res [%d,768]" % (b * t), "dropout": "dropout [%d,12,%d,%d]" % (b, t, t),
              "attention": "drop(softmax) @ V [%d,12,%d,%d]" % (b, t, t)}
    cases = [(case, labels[case]) for case in args.cases.split(",")]
    print("fused kernels: %s" % native.status())
    header = "%-30s %-8s %-14s %9s %9s %9s %9s" % ("case", "dtype", "backend", "saved MB", "peak MB",
                                                   "alloc MB", "time ms")
    print(header)
    print("-" * len(header))
    for case, label in cases:
        for dtype_name in args.dtypes.split(","):
            dtype = tf.as_dtype(dtype_name)
            results = measure(case, dtype, args.layers, args.repeats, b, t)
            for backend in BACKENDS:
                r = results[backend]
                print("%-30s %-8s %-14s %9s %9s %9s %9.1f" % (label, dtype_name, backend, megabytes(r["saved"]),
                                                              megabytes(r["peak"]), megabytes(r["alloc"]),
                                                              1000 * r["time"]))
            reference = results["reference"]
            for backend in BACKENDS[1:]:
                r = results[backend]
                print("%-30s %-8s %-14s %9s %9s %9s %9s" % (label, dtype_name, backend + "/ref",
                                                            ratio(r["saved"], reference["saved"]),
                                                            ratio(r["peak"], reference["peak"]),
                                                            ratio(r["alloc"], reference["alloc"]),
                                                            ratio(r["time"], reference["time"])))
        print()


if __name__ == "__main__":
    main()
