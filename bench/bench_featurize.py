"""Featurization speed and memory: the CMRC 2018 training file, and a synthetic corpus of a million questions.

    python bench/bench_featurize.py [--data ../shared/data/cmrc2018/cmrc2018_train.json]
        [--vocab ../shared/data/vocab/chinese_bert_vocab.txt] [--workers 1,2] [--questions 1000000]
        [--synthetic_workers 2] [--skip_synthetic] [--work_dir /tmp/bench_featurize]

Each measurement builds a training feature cache (tf_mrc.data.FeatureCache, the path run_finetune takes, default
CMRC windows: 512 / 128 / 64) in a fresh process and reports wall time, questions/s, the ratio against the first
worker count measured in the same run, the CPU time of all its processes (the figure that holds on a machine
shared with other jobs), and peak RSS: of the main process and of the largest worker (workers are forked from
the main process and share its pages, so their sum overstates the memory really used).

The synthetic corpus repeats the real file's articles (question ids made unique) up to ``--questions``
questions and is written as JSON lines, one article per line: that format is read as a stream, while a single
SQuAD JSON document of that size (~0.55 GB) would have to be parsed whole.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("TF_MRC_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))


def measure(data_file, vocab, workers, cache_dir):
    """Build the training cache of ``data_file`` once; returns the figures as a dict (run in its own process)."""
    sys.path.insert(0, ROOT)
    from tf_mrc.data import FeatureCache
    from tf_mrc.distributed import SingleProcess
    from tf_mrc.tasks import FeatureSettings, get_task
    from tf_mrc.tokenization import WordPieceTokenizer
    shutil.rmtree(cache_dir, ignore_errors=True)
    tokenizer = WordPieceTokenizer(vocab)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before, started = usage.ru_utime + usage.ru_stime, time.time()
    cache = FeatureCache(cache_dir, get_task("cmrc2018"), data_file, tokenizer, FeatureSettings(), True,
                         SingleProcess(), log=lambda line: None, workers=workers)
    seconds = time.time() - started
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = {"workers": workers, "seconds": seconds, "questions": cache.stats["examples"],
               "features": cache.num_features, "bytes": sum(os.path.getsize(p) for p in cache.record_files),
               "cpu_seconds": sum(usage.ru_utime + usage.ru_stime for usage in (own, children)) - cpu_before,
               "main_rss_mb": own.ru_maxrss / 1024.0, "worker_rss_mb": children.ru_maxrss / 1024.0}
    shutil.rmtree(cache_dir, ignore_errors=True)
    return figures


def synthetic_corpus(source, questions, path):
    """``source``'s articles over and over (ids suffixed with the copy number) up to ``questions`` questions,
    one article per line."""
    with open(source, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < questions:
            for article in articles:
                paragraphs = []
                for paragraph in article["paragraphs"]:
                    qas = [dict(qa, id="%s-%d" % (qa["id"], copy)) for qa in paragraph["qas"]][:questions - written]
                    written += len(qas)
                    if qas:
                        paragraphs.append(dict(paragraph, qas=qas))
                if paragraphs:
                    out.write(json.dumps(dict(article, paragraphs=paragraphs), ensure_ascii=False) + "\n")
                if written >= questions:
                    break
            copy += 1
    return written


def run_measurement(data_file, vocab, workers, work_dir):
    command = [sys.executable, os.path.abspath(__file__), "--measure", data_file, "--vocab", vocab,
               "--workers", str(workers), "--work_dir", work_dir]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    output = subprocess.run(command, env=env, check=True, stdout=subprocess.PIPE).stdout.decode()
    return json.loads(output.strip().splitlines()[-1])


def report(title, rows):
    print("\n%s" % title)
    print("| workers | wall s | questions/s | vs 1 worker | CPU s (all processes) | features | TFRecord MB | "
          "peak RSS main MB | peak RSS largest worker MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = rows[0]["questions"] / rows[0]["seconds"]
    for row in rows:
        rate = row["questions"] / row["seconds"]
        print("| %d | %.1f | %.0f | %.2fx | %.1f | %d | %.0f | %.0f | %s |" % (
            row["workers"], row["seconds"], rate, rate / base, row["cpu_seconds"], row["features"], row["bytes"] / 1e6,
            row["main_rss_mb"], "%.0f" % row["worker_rss_mb"] if row["workers"] > 1 else "-"))
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join(SHARED, "cmrc2018", "cmrc2018_train.json"))
    parser.add_argument("--vocab", default=os.path.join(SHARED, "vocab", "chinese_bert_vocab.txt"))
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (first: the baseline)")
    parser.add_argument("--questions", type=int, default=1000000)
    parser.add_argument("--synthetic_workers", default=str(len(os.sched_getaffinity(0))),
                        help="worker counts for the synthetic corpus (default: the cores; it takes minutes each)")
    parser.add_argument("--skip_synthetic", action="store_true")
    parser.add_argument("--work_dir", default="/tmp/bench_featurize")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.vocab, int(args.workers),
                                 os.path.join(args.work_dir, "cache-%s" % args.workers))))
        return
    os.makedirs(args.work_dir, exist_ok=True)
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, stdout=subprocess.PIPE).stdout.decode().strip()
    print("CPU: %s; %d cores available; the machine may be shared with other jobs" % (
        " ".join(cpu.split()[2:]), len(os.sched_getaffinity(0))))
    counts = [int(n) for n in args.workers.split(",")]
    report("%s (training cache, windows 512/128/64)" % os.path.basename(args.data),
           [run_measurement(args.data, args.vocab, n, args.work_dir) for n in counts])
    if not args.skip_synthetic:
        corpus = os.path.join(args.work_dir, "synthetic_%d.jsonl" % args.questions)
        if not os.path.exists(corpus):
            synthetic_corpus(args.data, args.questions, corpus)
        print("\nsynthetic corpus: %s (%.0f MB)" % (corpus, os.path.getsize(corpus) / 1e6))
        report("synthetic corpus of %d questions (JSON lines, training cache)" % args.questions,
               [run_measurement(corpus, args.vocab, int(n), args.work_dir) for n in args.synthetic_workers.split(",")])


if __name__ == "__main__":
    main()
