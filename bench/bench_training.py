"""Memory, speed and MFU of one full training step of a BERT-base-shaped span model, per memory setting.

    python bench/bench_training.py [--layers 12] [--batch 2] [--seq 512] [--repeats 3]
                                   [--settings reference,fused,context,recompute] [--torch] [--plain]
                                   [--profile]
    TF_ENABLE_ONEDNN_OPTS=0 python bench/bench_training.py ...   # Eigen kernels (tf_mrc.compat turns oneDNN on
                                                                 # wherever the CPU has AVX2)

A step is what training runs: forward with dropout 0.1 (BERT's), span loss, backward, gradient clipping, AdamW
update (tf_mrc.training.create_train_op). Inputs are constants (no input pipeline). Settings:
  reference   --kernels=reference                        autodiff of plain TF GELU and softmax
  fused       --kernels=fused                            memory-lean GELU / softmax / LayerNorm gradients (the
                                                         default): native C++ ops in fp32 and bf16 on CPU
  composite   fused with the native ops off (TF_MRC_NATIVE_KERNELS=0): the same ops as chains of stock TF ops
  context     fused + --attention_dropout_placement=context
  recompute   fused + --recompute                        gradient checkpointing per transformer block
  xla         composite + --xla (with TF_XLA_FLAGS=--tf_xla_cpu_global_jit, without which CPU is not clustered;
              XLA cannot compile the native ops)
  <name>_fp16 the same with --precision=fp16. fp16 matmuls are emulated on CPU (~50x slower), so these settings
              get only the graph figure ("saved") unless --run_fp16.
  <name>_bf16 the same with --precision=bf16 (TF 2 only); MFU against a bf16 matmul peak of the same run.
  --plain     adds "plain": google-research/bert's graph structure with tf.train.AdamOptimizer and no clipping
              (bench/plain_bert.py), the baseline of the "vs plain" column.
  --profile   time per op type (and per phase: forward, backward, optimizer) of one traced step of each setting,
              from the same RunMetadata as the step peak: where one setting spends time another does not.

Memory (MB = 2**20 bytes):
  saved       bytes of the forward tensors that the gradient ops read (bench_kernels'
              forward_tensors_read_by_backward over tf.gradients of the loss; variables and constants excluded):
              what the forward pass must keep alive until backprop. From the graph, so also for fp16 settings.
  step peak   most tensor bytes live at once during a step, from TF's own allocation log (RunMetadata
              step_stats allocation records summed in time order; see bench_kernels.step_peak_bytes). Counts
              activations, gradients and optimizer temporaries, not the variables, which exist before the step.
  alloc peak  the CPU allocator's peak during a step above its use before it (tf.config.experimental
              .get_memory_info; TF 2.x only); also counts TF's own buffers. The only figure for xla, whose
              compiled clusters allocate outside the step_stats records.
  state       bytes of the variables: weights + Adam's two slots (+ loss scale state), all fp32.
  total       state + step peak: what a device must hold.
Ops run one at a time (inter_op_parallelism_threads=1, intra_op = --threads), so every figure follows one
sequential order; torch runs its ops one at a time too, with torch.set_num_threads(--threads).

Speed: median wall time of --repeats steps after a warm-up; the settings (and transformers' PyTorch
BertForQuestionAnswering of the same shape, hidden_act gelu_new, dropout 0.1, torch AdamW + clip_grad_norm_)
take turns step by step, so that load from other processes falls on all alike.
FLOPs of a step, counted analytically (matmuls only; 2 FLOPs per multiply-add; backward = 2x forward):
  6 * tokens * P  +  12 * L * B * T^2 * H
  with tokens = B * T and P = L * (4 H^2 + 2 H I) + 2 H the matmul weights (Q, K, V, attention output, FFN
  in/out, span head); the second term is QK^T and PV. MFU = (FLOPs / step time) / (FLOP/s of a
  [4096 x 4096] x [4096 x 4096] fp32 matmul measured in the same run, same framework and threads: the best
  of 5 before the steps and 5 after them, so that a loaded moment does not set the peak).
"""
import argparse
import contextlib
import os
import sys
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(BENCH, ".."))
sys.path.insert(0, BENCH)

PLAIN = "plain"
PRECISION_SUFFIXES = {"_fp16": "fp16", "_bf16": "bf16"}
SETTINGS = {  # name: (kernels, attention dropout placement, recompute, xla, native kernels)
    "reference": ("reference", "probs", False, False, False),
    "fused": ("fused", "probs", False, False, True),
    "composite": ("fused", "probs", False, False, False),
    "context": ("fused", "context", False, False, True),
    "recompute": ("fused", "probs", True, False, True),
    "xla": ("fused", "probs", False, True, False),
}
MB = 1024.0 * 1024.0


def parse_setting(name):
    """(kernels, placement, recompute, xla, native, precision) of a setting name; the plain baseline is
    (None, ..., fp32)."""
    if name == PLAIN:
        return (None, "probs", False, False, False, "fp32")
    base, precision = name, "fp32"
    for suffix, value in PRECISION_SUFFIXES.items():
        if name.endswith(suffix):
            base, precision = name[:-len(suffix)], value
    if base not in SETTINGS:
        raise SystemExit("unknown setting %r; known: %s (each also as <name>_fp16, <name>_bf16)"
                         % (name, ", ".join(SETTINGS)))
    return SETTINGS[base] + (precision,)


def bert_base(layers):
    from tf_mrc.modeling.config import ModelConfig
    return ModelConfig(vocab_size=21128, hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                       intermediate_size=3072, max_position_embeddings=512)


def step_flops(config, batch, seq):
    hidden, layers = config.hidden_size, config.num_hidden_layers
    matmul_weights = layers * (4 * hidden * hidden + 2 * hidden * config.intermediate_size) + 2 * hidden
    return 6.0 * batch * seq * matmul_weights + 12.0 * layers * batch * seq * seq * hidden


def inputs(batch, seq, vocab_size):
    """The same token ids for both frameworks: random, a quarter of the second example padded."""
    rng = np.random.RandomState(0)
    mask = np.ones([batch, seq], np.int32)
    mask[-1, seq * 3 // 4:] = 0
    return {"input_ids": rng.randint(1, vocab_size, size=(batch, seq)).astype(np.int32) * mask,
            "input_mask": mask, "segment_ids": (np.arange(seq)[None, :] >= seq // 4).astype(np.int32) * mask,
            "start_position": rng.randint(seq // 4, seq // 2, size=batch).astype(np.int32),
            "end_position": rng.randint(seq // 2, seq * 3 // 4, size=batch).astype(np.int32)}


class TFStep:
    """One setting's training graph and session."""

    def __init__(self, name, config, features, threads, run=True):
        from tf_mrc import distributed, training
        from tf_mrc.compat import tf
        from tf_mrc.estimator import session_config
        from tf_mrc.modeling import build_encoder
        from tf_mrc.modeling.heads import build_head
        from tf_mrc.ops import native
        kernels, placement, recompute, xla, use_native, precision = parse_setting(name)
        self.name, self.precision, self.graph = name, precision, tf.Graph()
        with self.graph.as_default(), (contextlib.nullcontext() if use_native else native.off()):
            tf.set_random_seed(1)
            tensors = {key: tf.constant(value) for key, value in features.items()}
            if name == PLAIN:
                import plain_bert
                loss = plain_bert.span_loss(config, tensors)
                self.saved = saved_bytes(loss)
                self.train_op = plain_bert.train_op(loss)
            else:
                output = build_encoder(config, tensors["input_ids"], tensors["input_mask"], tensors["segment_ids"],
                                       True, kernels=kernels, compute_dtype=training.compute_dtype(precision),
                                       attention_dropout_placement=placement, recompute=recompute)
                _, loss = build_head("span", output, tensors, None, config.initializer_range, True)
                self.saved = saved_bytes(loss)
                self.train_op, _, _ = training.create_train_op(loss, 3e-5, 10 ** 6, 0,
                                                               distributed.SingleProcess(), precision=precision)
            self.state_bytes = sum(v.shape.num_elements() * v.dtype.base_dtype.size for v in tf.global_variables())
            self.step_peak = self.alloc_peak = None
            self.times = []
            if not run:
                return
            config_proto = session_config(distributed.SingleProcess(), xla) or tf.ConfigProto()
            config_proto.inter_op_parallelism_threads = 1
            config_proto.intra_op_parallelism_threads = threads
            self.session = tf.Session(graph=self.graph, config=config_proto)
            self.session.run(tf.global_variables_initializer())
        self.xla = xla

    def run(self):
        start = time.time()
        self.session.run(self.train_op)
        return time.time() - start

    def measure_memory(self):
        from bench_kernels import allocator_peak_bytes, step_peak_bytes
        from tf_mrc.compat import tf
        metadata = tf.RunMetadata()
        self.session.run(self.train_op, options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
                         run_metadata=metadata)
        self.step_peak = None if self.xla else step_peak_bytes(metadata)
        self.breakdown = None if self.xla else peak_breakdown(metadata)
        self.profile = time_by_op_type(metadata)
        self.alloc_peak = allocator_peak_bytes(self.session, self.train_op)


PARTS = (("attention/self", "attention (QKV, scores, probs)"), ("attention/output", "attention output + LN"),
         ("intermediate", "FFN in + GELU"), ("output", "FFN out + LN"), ("embeddings", "embeddings"))


def peak_breakdown(run_metadata):
    """Bytes live at the step's peak, by (phase, part of the network): each allocation record is charged to
    the op that allocated it until it is released."""
    import collections
    events = []
    for device in run_metadata.step_stats.dev_stats:
        for node in device.node_stats:
            for memory in node.memory:
                events.extend((r.alloc_micros, r.alloc_bytes, node.node_name) for r in memory.allocation_records)
    events.sort(key=lambda e: (e[0], e[1]))
    live, peak, by_node, at_peak = 0, 0, collections.Counter(), {}
    for _, delta, name in events:
        live += delta
        by_node[name] += delta
        if live > peak:
            peak, at_peak = live, dict(by_node)
    totals = collections.Counter()
    for name, size in at_peak.items():
        if "AdamWeightDecay" in name or "adam_" in name or "clip" in name or "global_norm" in name or \
                "/accum_grad" in name:
            phase = "optimizer"
        else:
            phase = "backward" if name.startswith("gradients") else "forward"
        part = next((label for key, label in PARTS if "/%s/" % key in name or name.endswith("/" + key)), "other")
        totals["%s: %s" % (phase, part) if phase != "optimizer" else phase] += size
    return totals


OPTIMIZER_MARKS = ("AdamWeightDecay", "clip_by_global_norm", "Adam/", "beta1_power", "beta2_power", "accum_grad",
                   "loss_scale", "global_norm")


def time_by_op_type(run_metadata):
    """{(phase, op type): seconds} of one traced step: each op's wall time, op type from its timeline label
    ('name = Type(inputs)', the kernel that ran after grappler's rewrites, e.g. _MklMatMul)."""
    import collections
    totals = collections.Counter()
    for device in run_metadata.step_stats.dev_stats:
        for node in device.node_stats:
            op_type = node.timeline_label.split(" = ", 1)[-1].split("(", 1)[0] or "?"
            if node.node_name.startswith("gradients"):
                phase = "backward"
            elif any(mark in node.node_name for mark in OPTIMIZER_MARKS):
                phase = "optimizer"
            else:
                phase = "forward"
            totals[(phase, op_type)] += node.all_end_rel_micros * 1e-6
    return totals


def print_profile(steps, top=25):
    """Per phase and the op types that take most time in any setting: seconds per step, settings side by side."""
    import collections
    phases = collections.OrderedDict((phase, [sum(v for (p, _), v in step.profile.items() if p == phase)
                                              for step in steps]) for phase in ("forward", "backward", "optimizer"))
    names = [step.name for step in steps]
    print()
    print("time of one traced step by phase and op type (s; tracing adds overhead to every op)")
    header = "%-40s" % "phase / op type" + "".join("%12s" % name[:11] for name in names)
    print(header)
    print("-" * len(header))
    for phase, values in phases.items():
        print("%-40s" % phase + "".join("%12.3f" % value for value in values))
    print("%-40s" % "all" + "".join("%12.3f" % sum(step.profile.values()) for step in steps))
    keys = collections.Counter()
    for step in steps:
        for key, value in step.profile.items():
            keys[key] = max(keys[key], value)
    for key, _ in keys.most_common(top):
        print("%-40s" % ("%s %s" % key)[:40] + "".join("%12.3f" % step.profile.get(key, 0.0) for step in steps))


def saved_bytes(loss):
    """Bytes of the forward tensors read by the ops of tf.gradients(loss, trainable variables), not counting
    variables, their reads and constants; Identity and IdentityN (tf.custom_gradient's outputs) forward their
    input's buffer, so a tensor read through them is counted once. Builds the gradient ops only to analyse
    them (they never run)."""
    from bench_kernels import forward_tensors_read_by_backward, tensor_bytes
    from tf_mrc.compat import tf
    graph = tf.get_default_graph()
    forward_ops = set(graph.get_operations())
    grads = [g for g in tf.gradients(loss, tf.trainable_variables()) if g is not None]
    grads = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads]
    kept, _ = forward_tensors_read_by_backward(grads, forward_ops, upstream=None)

    def is_weight(tensor):
        op = tensor.op
        return (op.type in ("VariableV2", "VarHandleOp", "ReadVariableOp", "Const") or
                (op.type == "Identity" and op.inputs[0].op.type == "VariableV2"))

    def buffer(tensor):
        while tensor.op.type in ("Identity", "IdentityN") and tensor.op.inputs[0].op.type != "VariableV2":
            tensor = tensor.op.inputs[tensor.value_index if tensor.op.type == "IdentityN" else 0]
        return tensor

    buffers = {buffer(t) for t in kept if not is_weight(t)}
    return sum(tensor_bytes(t) for t in buffers if not is_weight(t) and t.shape.is_fully_defined())


class TorchStep:
    """transformers' BertForQuestionAnswering of the same shape, trained the same way."""
    name = "transformers (PyTorch)"

    def __init__(self, config, features, threads):
        import torch
        import transformers
        torch.manual_seed(1)
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        bert = transformers.BertConfig(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size, hidden_act="gelu_new", hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, max_position_embeddings=config.max_position_embeddings)
        self.model = transformers.BertForQuestionAnswering(bert).train()
        self.attention = self.model.config._attn_implementation
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=3e-5, weight_decay=0.01, eps=1e-6)
        self.batch = {"input_ids": features["input_ids"], "attention_mask": features["input_mask"],
                      "token_type_ids": features["segment_ids"], "start_positions": features["start_position"],
                      "end_positions": features["end_position"]}
        self.batch = {key: torch.from_numpy(value.astype(np.int64)) for key, value in self.batch.items()}
        self.times = []

    def run(self):
        import torch
        start = time.time()
        self.optimizer.zero_grad(set_to_none=True)
        self.model(**self.batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return time.time() - start


def tf_matmul_flops(threads, size=4096, repeats=5, dtype="float32"):
    from tf_mrc.compat import tf
    with tf.Graph().as_default():
        a = tf.Variable(tf.cast(tf.random_normal([size, size], seed=1), dtype))
        b = tf.Variable(tf.cast(tf.random_normal([size, size], seed=2), dtype))
        product = tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))
        config = tf.ConfigProto(inter_op_parallelism_threads=1, intra_op_parallelism_threads=threads)
        with tf.Session(config=config) as session:
            session.run(tf.global_variables_initializer())
            session.run(product)
            times = []
            for _ in range(repeats):
                start = time.time()
                session.run(product)
                times.append(time.time() - start)
    return 2.0 * size ** 3 / min(times)


def torch_matmul_flops(threads, size=4096, repeats=5):
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        start = time.time()
        torch.matmul(a, b)
        times.append(time.time() - start)
    return 2.0 * size ** 3 / min(times)


def megabytes(value):
    return "-" if value is None else "%.0f" % (value / MB)


def ratio(value, reference):
    return "-" if value is None or not reference else "%.2f" % (float(value) / reference)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per setting (0: memory only)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--settings", default="reference,fused,context,recompute")
    parser.add_argument("--torch", action="store_true", help="also time transformers' PyTorch model")
    parser.add_argument("--run_fp16", action="store_true", help="run the _fp16 settings too (minutes per step)")
    parser.add_argument("--breakdown", action="store_true", help="print what is live at each step peak")
    parser.add_argument("--plain", action="store_true", help="also run google-research/bert's graph structure")
    parser.add_argument("--profile", action="store_true", help="print time per phase and op type")
    args = parser.parse_args()
    names = ([PLAIN] if args.plain else []) + args.settings.split(",")
    for name in names:
        parse_setting(name)
    if any(parse_setting(name)[3] for name in names):
        flags = os.environ.get("TF_XLA_FLAGS", "")
        if "--tf_xla_cpu_global_jit" not in flags:  # read when XLA first starts, after this
            os.environ["TF_XLA_FLAGS"] = (flags + " --tf_xla_cpu_global_jit").strip()

    from tf_mrc.compat import cpu_kernels, tf
    config = bert_base(args.layers)
    features = inputs(args.batch, args.seq, config.vocab_size)
    flops = step_flops(config, args.batch, args.seq)
    print("training step of a BERT-base-shaped span model: L=%d H=768 A=12 I=3072, batch %d x seq %d, dropout 0.1, "
          "AdamW; TF %s, %s, %d threads; load average at start %.2f %.2f %.2f on %d cores"
          % (args.layers, args.batch, args.seq, tf.VERSION, cpu_kernels(),
             args.threads, *os.getloadavg(), os.cpu_count()))
    print("FLOPs per step (6 tokens P + 12 L B T^2 H): %.1f G" % (flops / 1e9))

    peak_dtypes = {"fp32": "float32"}
    if any(parse_setting(name)[-1] == "bf16" for name in names):
        peak_dtypes["bf16"] = "bfloat16"
    tf_peaks = {key: tf_matmul_flops(args.threads, dtype=dtype) for key, dtype in peak_dtypes.items()} \
        if args.repeats else {}
    torch_peak = torch_matmul_flops(args.threads) if args.torch and args.repeats else None
    steps, graph_only = [], []
    for name in names:
        start = time.time()
        run = args.run_fp16 or parse_setting(name)[-1] != "fp16"
        step = TFStep(name, config, features, args.threads, run=run)
        if not run:
            graph_only.append(step)
            continue
        step.run()  # warm-up: grappler, XLA compilation, allocations
        step.measure_memory()
        steps.append(step)
        print("  %-14s built + 3 steps (warm-up, traced, allocator) in %.0f s" % (name, time.time() - start),
              flush=True)
    torch_step = None
    if args.torch and args.repeats:
        torch_step = TorchStep(config, features, args.threads)
        torch_step.run()
    for _ in range(args.repeats):
        for step in steps + ([torch_step] if torch_step else []):
            step.times.append(step.run())
    for key, dtype in peak_dtypes.items() if args.repeats else ():
        tf_peaks[key] = max(tf_peaks[key], tf_matmul_flops(args.threads, dtype=dtype))
    if torch_step:
        torch_peak = max(torch_peak, torch_matmul_flops(args.threads))

    reference = (steps + graph_only)[0]
    print()
    print("memory (MB; ratios to %s)" % reference.name)
    header = "%-16s %8s %6s %10s %6s %10s %6s %8s %10s %6s" % (
        "setting", "saved", "ratio", "step peak", "ratio", "alloc peak", "ratio", "state", "total", "ratio")
    print(header)
    print("-" * len(header))

    def total(step):
        return None if step.step_peak is None else step.state_bytes + step.step_peak

    for step in steps + graph_only:
        print("%-16s %8s %6s %10s %6s %10s %6s %8s %10s %6s" % (
            step.name, megabytes(step.saved), ratio(step.saved, reference.saved), megabytes(step.step_peak),
            ratio(step.step_peak, reference.step_peak), megabytes(step.alloc_peak),
            ratio(step.alloc_peak, reference.alloc_peak), megabytes(step.state_bytes), megabytes(total(step)),
            ratio(total(step), total(reference))))
    if args.breakdown:
        for step in steps:
            if step.breakdown:
                print("live at the step peak of %s (MB): %s" % (step.name, ", ".join(
                    "%s %.0f" % (key, value / MB) for key, value in step.breakdown.most_common() if value > MB)))
    if args.profile:
        print_profile(steps)
    if not args.repeats:
        return
    torch_time = float(np.median(torch_step.times)) if torch_step else None
    plain_time = next((float(np.median(step.times)) for step in steps if step.name == PLAIN), None)
    print()
    print("speed (median of %d steps; MFU against a 4096^3 matmul of the step's precision: TF %s%s)" % (
        args.repeats, ", ".join("%s %.1f GFLOP/s" % (key, value / 1e9) for key, value in tf_peaks.items()),
        ", torch fp32 %.1f GFLOP/s" % (torch_peak / 1e9) if torch_peak else ""))
    header = "%-24s %8s %8s %10s %10s %9s %6s" % ("setting", "step s", "ex/s", "vs plain", "vs torch", "GFLOP/s",
                                                  "MFU")
    print(header)
    print("-" * len(header))
    for step in steps + ([torch_step] if torch_step else []):
        seconds = float(np.median(step.times))
        peak = torch_peak if step is torch_step else tf_peaks.get(step.precision, tf_peaks["fp32"])
        label = step.name + (" [%s]" % torch_step.attention if step is torch_step else "")
        print("%-24s %8.2f %8.3f %10s %10s %9.1f %6.2f" % (
            label, seconds, args.batch / seconds, ratio(plain_time, seconds) if plain_time else "-",
            ratio(torch_time, seconds) if torch_time else "-", flops / seconds / 1e9, flops / seconds / peak))
    print("(min-max step s: %s)" % ", ".join("%s %.2f-%.2f" % (step.name, min(step.times), max(step.times))
                                            for step in steps + ([torch_step] if torch_step else [])))
    print("(vs plain / vs torch = examples/s of the setting / examples/s of the plain graph / transformers; "
          "load average at end %.2f %.2f %.2f)"
          % os.getloadavg())


if __name__ == "__main__":
    main()
