"""The training input pipeline: features/s it delivers and the memory its shuffle buffer holds.

    python bench/bench_input.py [--data cmrc2018_train.json] [--batch 32] [--batches 300] [--copies 30]

Compares tf_mrc's training input_fn (tf_mrc.data: the shard read back by offset, a fresh permutation every epoch,
records parsed a batch at a time) with the pipeline it replaced, measured in the same run: the shard's records
held in a Python list, one parse op per record, then batching.
- speed: features/s of each pipeline over ``--batches`` batches of the CMRC 2018 training cache (seq 512) after
  a warm-up, drawn in turns so that load from other processes falls on both alike;
- memory: the peak RSS of a fresh process that opens a shard of ``--copies`` x the cache's records (a corpus that
  size) and reads every record once in training order, with each of the two readers.
"""
import argparse
import os
import resource
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
SHARED = os.environ.get("TF_MRC_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))


def build_cache(args):
    from tf_mrc import distributed
    from tf_mrc.data import FeatureCache
    from tf_mrc.tasks import FeatureSettings, get_task
    from tf_mrc.tokenization import load_tokenizer
    return FeatureCache(os.path.join(args.work_dir, "cache"), get_task("cmrc2018"), args.data,
                        load_tokenizer("bert", args.vocab), FeatureSettings(512, 128, 64), True,
                        distributed.SingleProcess(), log=lambda line: None)


def in_memory_input_fn(cache, batch_size, seed):
    """The replaced pipeline: every record of the shard in a list, parsed one by one, then batched."""
    from tf_mrc.compat import tf
    from tf_mrc.data import training_order
    shapes = cache.task.feature_shapes(cache.settings)
    spec = {name: tf.FixedLenFeature(shape, tf.int64) for name, shape in shapes.items()}

    def records():
        held = [record for path in cache.record_files for record in tf.python_io.tf_record_iterator(path)]
        for index in training_order(len(held), seed, 0):
            yield held[index]

    def parse(record):
        return {name: tf.cast(value, tf.int32) for name, value in tf.parse_single_example(record, spec).items()}

    def input_fn(params=None):
        dataset = tf.data.Dataset.from_generator(records, tf.string, tf.TensorShape([]))
        return dataset.map(parse, num_parallel_calls=2).batch(batch_size, drop_remainder=True).prefetch(2)
    return input_fn


def speed(args, cache):
    from tf_mrc import distributed
    from tf_mrc.compat import tf
    pipelines = {"in-memory list, parse per record": in_memory_input_fn(cache, args.batch, 1),
                 "tf_mrc (offsets, parse per batch)": cache.input_fn_builder(args.batch,
                                                                              distributed.SingleProcess(), 1)}
    seconds = {name: 0.0 for name in pipelines}
    with tf.Graph().as_default():
        nexts = {name: tf.data.make_one_shot_iterator(fn()).get_next() for name, fn in pipelines.items()}
        with tf.Session() as session:
            for name, batch in nexts.items():  # warm-up: the first batch opens the shard
                session.run(batch)
            for _ in range(args.batches // 10):
                for name, batch in nexts.items():
                    started = time.time()
                    for _ in range(10):
                        session.run(batch)
                    seconds[name] += time.time() - started
    features = (args.batches // 10) * 10 * args.batch
    return {name: features / value for name, value in seconds.items()}


def write_large_shard(cache, copies, path):
    from tf_mrc.compat import tf
    records = [record for p in cache.record_files for record in tf.python_io.tf_record_iterator(p)]
    if not os.path.isfile(path):
        with tf.python_io.TFRecordWriter(path + ".tmp") as writer:
            for _ in range(copies):
                for record in records:
                    writer.write(record)
        os.replace(path + ".tmp", path)
    return len(records) * copies


def measure_reader(kind, path):
    """(Child process) read every record of ``path`` once in training order; print peak RSS in MB."""
    from tf_mrc.compat import tf
    from tf_mrc.data import ShardRecords, training_order
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, total = time.time(), 0
    if kind == "list":
        shard = [record for record in tf.python_io.tf_record_iterator(path)]
    else:
        shard = ShardRecords([path], 0, 1)
    order = training_order(len(shard), 1, 0)
    for _ in range(len(shard)):
        total += len(shard[next(order)])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("%d %.1f %.1f %.1f" % (total, before / 1024.0, peak / 1024.0, time.time() - started))


def memory(path):
    results = {}
    for kind in ("list", "offsets"):
        out = subprocess.run([sys.executable, __file__, "--measure", kind, path], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        total, before, peak, seconds = out.stdout.decode().split()[-4:]
        results[kind] = (int(total), float(before), float(peak), float(seconds))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(SHARED, "cmrc2018", "cmrc2018_train.json"))
    parser.add_argument("--vocab", default=os.path.join(SHARED, "vocab", "chinese_bert_vocab.txt"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--copies", type=int, default=30, help="the memory part's shard: the cache's records x N")
    parser.add_argument("--work_dir", default="/tmp/bench_input")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure_reader(*args.measure)
    import platform
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print("CPU: %s; %d cores available; load average at start %s" % (
        cpu, len(os.sched_getaffinity(0)), " ".join("%.2f" % x for x in os.getloadavg())))
    os.makedirs(args.work_dir, exist_ok=True)
    cache = build_cache(args)
    print("cache: %d features (seq 512), %.0f MB of TFRecord" % (
        cache.num_features, sum(os.path.getsize(p) for p in cache.record_files) / 2.0 ** 20))
    rates = speed(args, cache)
    baseline = rates["in-memory list, parse per record"]
    print("\n| pipeline (batch %d, %d batches, interleaved) | features/s | vs in-memory |\n|---|---:|---:|"
          % (args.batch, args.batches))
    for name, rate in rates.items():
        print("| %s | %.0f | %.2fx |" % (name, rate, rate / baseline))
    path = os.path.join(args.work_dir, "shard_x%d.tfrecord" % args.copies)
    count = write_large_shard(cache, args.copies, path)
    size_mb = os.path.getsize(path) / 2.0 ** 20
    results = memory(path)
    print("\n| shard reader (%d records, %.0f MB; one pass in training order) | peak RSS MB | above start-up MB "
          "| seconds |\n|---|---:|---:|---:|" % (count, size_mb))
    for kind, label in (("list", "records in a Python list"), ("offsets", "tf_mrc ShardRecords (offsets)")):
        total, before, peak, seconds = results[kind]
        print("| %s | %.0f | %.0f | %.1f |" % (label, peak, peak - before, seconds))
    assert results["list"][0] == results["offsets"][0], "the two readers read different bytes"
    print("load average at end %s" % " ".join("%.2f" % x for x in os.getloadavg()))


if __name__ == "__main__":
    main()
