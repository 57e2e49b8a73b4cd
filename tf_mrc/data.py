"""Feature cache and input_fn: examples -> features -> TFRecord (+ JSON sidecar) -> tf.data.

The cache is keyed by the task, the data file's content, the tokenizer (vocabulary hash) and the window
settings, so changing any of them rebuilds it and nothing stale is ever read. Under Horovod, rank 0 writes
and every rank waits on a barrier; each rank then reads its own shard of the records.
"""
import hashlib
import json
import os

import numpy as np

from tf_mrc.compat import tf
from tf_mrc.tokenization import file_fingerprint

CACHE_FORMAT = 1


def cache_key(task, data_file, tokenizer, settings, is_training):
    options = json.dumps(task.cache_identity(), sort_keys=True, default=str)
    sources = "+".join(file_fingerprint(path) for path in task.source_files(data_file))
    parts = [task.name, sources, tokenizer.fingerprint, settings.key(),
             "train" if is_training else "eval", hashlib.sha1(options.encode()).hexdigest()[:6], str(CACHE_FORMAT)]
    return "-".join(parts)


def write_tfrecord(path, arrays, shapes):
    tmp = path + ".tmp"
    with tf.python_io.TFRecordWriter(tmp) as writer:
        for features in arrays:
            record = {name: tf.train.Feature(int64_list=tf.train.Int64List(
                value=np.asarray(features[name], dtype=np.int64).reshape(-1)))
                for name in shapes}
            writer.write(tf.train.Example(features=tf.train.Features(feature=record)).SerializeToString())
    os.replace(tmp, path)


class FeatureCache:
    """Features of one data file, built once and shared by every rank and every later run."""

    def __init__(self, cache_dir, task, data_file, tokenizer, settings, is_training, dist, log=print):
        self.task, self.settings, self.is_training = task, settings, is_training
        key = cache_key(task, data_file, tokenizer, settings, is_training)
        self.record_path = os.path.join(cache_dir, key + ".tfrecord")
        self.meta_path = os.path.join(cache_dir, key + ".json")
        self.examples = task.read_examples(data_file, is_training)
        if dist.is_chief and not os.path.exists(self.meta_path):
            os.makedirs(cache_dir, exist_ok=True)
            featurized = task.featurize(self.examples, tokenizer, settings, is_training)
            write_tfrecord(self.record_path, featurized.arrays, task.feature_shapes(settings))
            meta = {"num_features": len(featurized.arrays), "stats": featurized.stats,
                    "sidecar": None if is_training else featurized.sidecar}
            with open(self.meta_path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(meta, f)
            os.replace(self.meta_path + ".tmp", self.meta_path)
            log("[data] %s: %d examples -> %d features, cached at %s" % (
                os.path.basename(data_file), len(self.examples), len(featurized.arrays), self.record_path))
        dist.barrier("feature-cache")
        with open(self.meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        self.num_features, self.stats, self.sidecar = meta["num_features"], meta["stats"], meta["sidecar"]
        if self.num_features == 0:
            raise ValueError("%s produced no features (stats: %s)" % (data_file, self.stats))

    def input_fn_builder(self, batch_size, dist, seed=0, consumed=0):
        """input_fn for the Estimator, reading this rank's shard (records rank, rank + size, ...).
        Training: the shard in ``training_order`` (a fresh permutation every epoch), repeated forever (the step
        count bounds training, so every rank runs the same number of steps whatever its shard size), starting
        after the ``consumed`` features this rank already trained on; otherwise the shard once, in order."""
        shapes = self.task.feature_shapes(self.settings)
        spec = {name: tf.FixedLenFeature(shape, tf.int64) for name, shape in shapes.items()}
        path, is_training = self.record_path, self.is_training

        def parse(record):
            parsed = tf.parse_single_example(record, spec)
            return {name: tf.cast(value, tf.int32) for name, value in parsed.items()}

        def shuffled_records():
            records = shard_records(path, dist.rank, dist.size)
            for index in training_order(len(records), seed, dist.rank, consumed):
                yield records[index]

        def input_fn(params=None):
            if is_training:
                dataset = tf.data.Dataset.from_generator(shuffled_records, tf.string, tf.TensorShape([]))
            else:
                dataset = tf.data.TFRecordDataset(path)
                if dist.size > 1:
                    dataset = dataset.shard(dist.size, dist.rank)
            dataset = dataset.map(parse, num_parallel_calls=2)
            dataset = dataset.batch(batch_size, drop_remainder=is_training)
            return dataset.prefetch(2)

        return input_fn


def shard_records(path, rank, size):
    """Rank ``rank``'s serialized records (file positions rank, rank + size, ...) in file order, in memory: the
    whole shard is the shuffle buffer, so every epoch can draw any order."""
    return [record for position, record in enumerate(tf.python_io.tf_record_iterator(path))
            if position % size == rank]


def training_order(shard_size, seed, rank, consumed=0):
    """Shard positions in training order, forever: epoch e is a permutation drawn from (seed, e, rank) alone,
    and the sequence starts after the first ``consumed`` positions, so a run resumed at any micro-batch
    continues the order an uninterrupted run would have followed."""
    epoch, offset = divmod(consumed, shard_size)
    while True:
        permutation = np.random.RandomState([seed, epoch, rank]).permutation(shard_size)
        for index in permutation[offset:]:
            yield int(index)
        epoch, offset = epoch + 1, 0
