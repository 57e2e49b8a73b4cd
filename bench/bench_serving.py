"""Serving throughput: the demo server with dynamic batching vs one request at a time, same model, same run.

    python bench/bench_serving.py [--layers 4] [--seq 128] [--clients 1 8 32] [--requests 64] [--max_seconds 60]

A BERT-base-shaped span model (H 768, A 12, ``--layers``) with random weights is frozen to a .pb with the Chinese
BERT vocabulary (../shared/data, else the tiny one) and served on 127.0.0.1 twice, each time by ``python -m
serving_demo --serve`` in its own process: ``--one_at_a_time`` (the demo before dynamic batching) and with the
DynamicBatcher (``--batch_size`` windows per model run, ``--batch_window_ms``). Each level starts N concurrent
clients that POST the demo's sample questions until ``--requests`` have been answered (or ``--max_seconds``
passed), in the order one-at-a-time, batched, batched, one-at-a-time with half the requests each (both servers run
throughout, the idle one waits), so drift in the machine's load touches both alike; it reports answers/s and
p50 / p99 latency. Every batched answer is compared with the one-at-a-time answer to the same question. Prints a
table and, last, one JSON line. Loopback only; the servers stop at the end.
"""
import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHARED_VOCAB = os.path.join(os.path.dirname(ROOT), "shared", "data", "vocab", "chinese_bert_vocab.txt")
TINY_VOCAB = os.path.join(ROOT, "tf_mrc", "resources", "tiny", "vocab.txt")


def export_random_model(directory, task, config, feature_settings, vocab_file, task_options=None, seed=7):
    """A .pb (and sidecar) of ``config`` with ``task``'s head and random weights: serving without a training
    run. Returns the .pb path."""
    from export import to_pb
    from tf_mrc.compat import tf
    from tf_mrc.tasks import get_task
    head_task = get_task(task, task_options)
    prefix = os.path.join(directory, "ckpt", "model.ckpt")
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        to_pb.build_inference_graph(config, head_task.head, feature_settings["max_seq_length"],
                                    getattr(head_task, "num_choices", None) if head_task.head == "choice" else None)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, prefix)
    spec = to_pb.ExportSpec(checkpoint=prefix, config=config, task=task, vocab_file=vocab_file,
                            feature_settings=feature_settings, task_options=task_options or {})
    pb = os.path.join(directory, "pb", "model.pb")
    to_pb.export(spec, pb, log=lambda line: None)
    return pb


def sample_items():
    with open(os.path.join(ROOT, "serving_demo", "samples", "samples.json"), encoding="utf-8") as f:
        data = json.load(f)
    return [{"passage": p["context"], "question": qa["question"], "id": qa["id"]}
            for article in data["data"] for p in article["paragraphs"] for qa in p["qas"]]


def ask(url, item):
    request = urllib.request.Request(url, data=json.dumps(item, ensure_ascii=False).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read().decode("utf-8"))


def load(url, items, clients, requests, max_seconds):
    """N clients asking in a loop until ``requests`` answers or ``max_seconds``: (wall seconds, latencies in s,
    {question id: answer})."""
    lock, latencies, answers, issued = threading.Lock(), [], {}, [0]
    stop_at = time.monotonic() + max_seconds

    def client():
        while True:
            with lock:
                if issued[0] >= requests or time.monotonic() > stop_at:
                    return
                item = items[issued[0] % len(items)]
                issued[0] += 1
            started = time.perf_counter()
            result = ask(url, item)
            with lock:
                latencies.append(time.perf_counter() - started)
                answers[item["id"]] = result["answer"]

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, answers


@contextlib.contextmanager
def serving(pb, mode, args):
    """``python -m serving_demo --serve 0`` in its own process (the clients' threads stay out of its
    interpreter); yields its URL and stops it at the end."""
    command = [sys.executable, "-m", "serving_demo", "--pb", pb, "--serve", "0", "--batch_size",
               str(args.batch_size), "--batch_window_ms", str(args.batch_window_ms), "--max_connections",
               str(max(64, 2 * max(args.clients)))] + (["--one_at_a_time"] if mode == "one_at_a_time" else [])
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if not match:
            raise SystemExit("the demo server did not start: %r" % line)
        yield match.group()
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128, help="max_seq_length of the graph")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=64, help="answers per level")
    parser.add_argument("--max_seconds", type=float, default=60, help="time cap per level")
    parser.add_argument("--batch_size", type=int, default=4, help="the most windows in one batched model run")
    parser.add_argument("--batch_window_ms", type=float, default=5.0)
    args = parser.parse_args()

    import tensorflow
    from tf_mrc.modeling.config import ModelConfig

    vocab = SHARED_VOCAB if os.path.isfile(SHARED_VOCAB) else TINY_VOCAB
    with open(vocab, encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    config = ModelConfig(vocab_size=vocab_size, hidden_size=768, num_hidden_layers=args.layers,
                         num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    settings = {"max_seq_length": args.seq, "doc_stride": args.seq // 2, "max_query_length": 32,
                "max_answer_length": 30, "n_best_size": 20}
    pb = export_random_model(tempfile.mkdtemp(prefix="bench_serving_"), "cmrc2018", config, settings, vocab)
    items = sample_items()
    cpu = "unknown CPU"
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    print("tensorflow %s, %s, %d cores, load average %.1f; BERT-base shape with %d layers, seq %d; %d sample "
          "questions; batched: up to %d windows a run, %g ms window" % (
              tensorflow.__version__, cpu, os.cpu_count(), os.getloadavg()[0], args.layers, args.seq, len(items),
              args.batch_size, args.batch_window_ms), flush=True)

    figures, answers = {}, {}
    with serving(pb, "one_at_a_time", args) as one_url, serving(pb, "batched", args) as batched_url:
        urls = {"one_at_a_time": one_url, "batched": batched_url}
        for url in urls.values():
            ask(url, items[0])  # warm-up
        for clients in args.clients:
            # A B B A, each half the requests: the machine's load drifts, and both modes see the same drift.
            measured = {mode: {"seconds": 0.0, "latencies": []} for mode in urls}
            for mode in ("one_at_a_time", "batched", "batched", "one_at_a_time"):
                seconds, latencies, got = load(urls[mode], items, clients, args.requests // 2, args.max_seconds / 2)
                measured[mode]["seconds"] += seconds
                measured[mode]["latencies"] += latencies
                answers.setdefault(mode, {}).update(got)
            for mode, m in measured.items():
                p50, p99 = np.percentile(m["latencies"], [50, 99]) * 1e3
                figures[(mode, clients)] = {"answers_per_s": round(len(m["latencies"]) / m["seconds"], 2),
                                            "p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1),
                                            "answers": len(m["latencies"])}

    compared = sorted(set(answers["one_at_a_time"]) & set(answers["batched"]))
    differing = [qid for qid in compared if answers["one_at_a_time"][qid] != answers["batched"][qid]]
    print("| clients | one at a time answers/s | p50 ms | p99 ms | batched answers/s | p50 ms | p99 ms | "
          "batched / one at a time |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for clients in args.clients:
        one, batched = figures[("one_at_a_time", clients)], figures[("batched", clients)]
        ratio = batched["answers_per_s"] / one["answers_per_s"]
        print("| %d | %.1f | %.0f | %.0f | %.1f | %.0f | %.0f | %.2f |" % (
            clients, one["answers_per_s"], one["p50_ms"], one["p99_ms"], batched["answers_per_s"],
            batched["p50_ms"], batched["p99_ms"], ratio))
        rows.append({"clients": clients, "one_at_a_time": one, "batched": batched, "ratio": round(ratio, 2)})
    print("answers compared: %d questions, %d differ between batched and one at a time" % (
        len(compared), len(differing)))
    print(json.dumps({"bench": "serving", "cpu": cpu, "layers": args.layers, "seq": args.seq,
                      "batch_size": args.batch_size, "batch_window_ms": args.batch_window_ms, "levels": rows,
                      "answers_differing": len(differing)}))
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
