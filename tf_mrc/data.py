"""Feature cache and input_fn: examples -> features -> TFRecord shards (+ sidecar JSON lines) -> tf.data.

One cache, for one KEY (the task, the data files' content, the tokenizer's vocabulary hash, the window settings
and the format; changing any of them makes a new cache, so nothing stale is ever read), is:

    KEY.index.json                             what the cache holds: per shard its files with their record
                                               count and SHA-256, the totals, the featurization stats, and a
                                               checksum of the index itself. Written last: no index, no cache.
    KEY.part-RRRRR-of-NNNNN.tfrecord           the features of shard R, in example order
    KEY.part-RRRRR-of-NNNNN.sidecar.jsonl      (evaluation data) one JSON record per feature, the same order

Opening a cache verifies every file against its index (count and checksum) and rebuilds anything that does not
verify, saying why in one line. Building streams: examples are read, featurized (by a pool of
``workers`` processes) and written as they come, so memory stays bounded whatever the corpus. Under Horovod each
rank featurizes one contiguous block of the examples into its own shard and rank 0 writes the index once every
rank is done; the shards read in order are exactly the features of one process.
"""
import array
import collections
import contextlib
import hashlib
import itertools
import json
import os
import struct

import numpy as np

from tf_mrc.compat import tf
from tf_mrc.errors import UserError
from tf_mrc.featurization import ChunkEncoder, available_cores, encode_stream
from tf_mrc.tokenization import file_fingerprint

CACHE_FORMAT = 2
ABSENT = "absent"


def cache_key(task, data_file, tokenizer, settings, is_training):
    options = json.dumps(task.cache_identity(), sort_keys=True, default=str)
    sources = "+".join(file_fingerprint(path) for path in task.source_files(data_file))
    parts = [task.name, sources, tokenizer.fingerprint, settings.key(),
             "train" if is_training else "eval", hashlib.sha1(options.encode()).hexdigest()[:6], str(CACHE_FORMAT)]
    return "-".join(parts)


class CacheInvalid(Exception):
    """A cache file that does not match its index; the message says which and how."""


BLOCK_BYTES = 1 << 22


def _blocks(path):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK_BYTES), b""):
            yield block


def walk_records(path, digest=None):
    """(offset, data length) of each record of a TFRecord file, in order, reading the file in large blocks and
    walking the record framing (8-byte length, CRC, data, CRC) through them; every block also goes to
    ``digest`` when given. CacheInvalid when the file ends inside a record."""
    count = 0
    next_header = end = 0           # file offsets: the next record's header, the end of what was read
    tail, tail_start = b"", 0       # the unwalked bytes of a header cut by a block boundary
    for block in _blocks(path):
        if digest is not None:
            digest.update(block)
        data, data_start = tail + block, tail_start
        end += len(block)
        while next_header + 12 <= end:
            length = struct.unpack_from("<Q", data, next_header - data_start)[0]
            yield next_header, length
            next_header += 16 + length
            count += 1
        tail, tail_start = (data[next_header - data_start:], next_header) if next_header < end else (b"", end)
    if next_header != end:
        raise CacheInvalid("%s ends inside record %d" % (os.path.basename(path),
                                                          count if next_header > end else count + 1))


def scan_records(path):
    """(record count, SHA-256 of the file) of a TFRecord file; CacheInvalid when it ends inside a record."""
    digest = hashlib.sha256()
    count = sum(1 for _ in walk_records(path, digest))
    return count, digest.hexdigest()


def scan_lines(path):
    """(line count, SHA-256 of the file) of a JSON-lines file."""
    digest, count = hashlib.sha256(), 0
    for block in _blocks(path):
        digest.update(block)
        count += block.count(b"\n")
    return count, digest.hexdigest()


def _index_checksum(content):
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def _write_atomically(path, text):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_shard(record_path, sidecar_path, chunks):
    """Write the EncodedChunks ``chunks`` as they come to ``record_path`` (and the sidecar lines to
    ``sidecar_path`` unless None); each file appears under its name only once complete. Returns the shard's
    index entry (file names, counts, checksums) and its stats."""
    stats = collections.Counter()
    with tf.python_io.TFRecordWriter(record_path + ".tmp") as writer, \
            (open(sidecar_path + ".tmp", "w", encoding="utf-8") if sidecar_path else contextlib.nullcontext()) \
            as sidecar:
        for chunk in chunks:
            for record in chunk.records:
                writer.write(record)
            if sidecar is not None:
                sidecar.writelines(chunk.sidecar_lines)
            stats.update(chunk.stats)
    entry = {}
    for role, path, scan in (("records", record_path, scan_records), ("sidecar", sidecar_path, scan_lines)):
        if path is None:
            entry[role] = None
            continue
        os.replace(path + ".tmp", path)
        count, sha256 = scan(path)
        entry[role] = {"file": os.path.basename(path), "count": count, "sha256": sha256}
    return entry, stats


class Sidecar:
    """The sidecar records of a cache, in feature order, read back line by line from its shards (never one
    giant JSON document in memory); iterable any number of times, ``len`` from the index."""

    def __init__(self, paths, count):
        self.paths, self.count = paths, count

    def __len__(self):
        return self.count

    def __iter__(self):
        for path in self.paths:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)


def default_workers(dist):
    """Featurization processes per rank: this host's cores shared by its ranks."""
    return max(1, available_cores() // getattr(dist, "local_size", 1))


class FeatureCache:
    """Features of one data file, built once (by every rank, each its own shard) and shared by every rank and
    every later run. ``workers``: featurization processes per rank (None: ``default_workers``)."""

    def __init__(self, cache_dir, task, data_file, tokenizer, settings, is_training, dist, log=print, workers=None):
        self.task, self.data_file, self.settings, self.is_training = task, data_file, settings, is_training
        self.cache_dir = cache_dir
        self.key = cache_key(task, data_file, tokenizer, settings, is_training)
        self.index_path = os.path.join(cache_dir, self.key + ".index.json")
        self._examples = None
        problem = dist.broadcast_object(self.verify() if dist.is_chief else None)
        if problem is not None:
            if problem != ABSENT and dist.is_chief:
                log("[data] feature cache %s does not verify (%s): rebuilding it" % (self.index_path, problem))
            self._build(tokenizer, dist, workers or default_workers(dist), log)
        index = self._read_index()
        self.num_features, self.stats = index["num_features"], index["stats"]
        self.record_files = [os.path.join(cache_dir, shard["records"]["file"]) for shard in index["shards"]]
        self.sidecar = None if is_training else Sidecar(
            [os.path.join(cache_dir, shard["sidecar"]["file"]) for shard in index["shards"]], self.num_features)
        if self.num_features == 0:
            raise UserError("%s produced no features (stats: %s)" % (data_file, json.dumps(self.stats)))

    @property
    def examples(self):
        """The data file's examples (read on first use: training from a cache never needs them)."""
        if self._examples is None:
            self._examples = self.task.read_examples(self.data_file, self.is_training)
        return self._examples

    # -- verification ---------------------------------------------------------------------------------
    def _read_index(self):
        """The index's content; CacheInvalid when it is not a complete index of this format."""
        try:
            with open(self.index_path, encoding="utf-8") as f:
                index = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise CacheInvalid("index is not valid JSON (%s)" % str(err).split("\n")[0])
        if not isinstance(index, dict) or not isinstance(index.get("content"), dict):
            raise CacheInvalid("index has no content")
        if index.get("checksum") != _index_checksum(index["content"]):
            raise CacheInvalid("index checksum does not match its content")
        if index["content"].get("format") != CACHE_FORMAT:
            raise CacheInvalid("index is of format %r, not %d" % (index["content"].get("format"), CACHE_FORMAT))
        return index["content"]

    def verify(self):
        """None when the index and every file it names verify (record/line counts and SHA-256), else why not
        (ABSENT when there is no index)."""
        if not os.path.exists(self.index_path):
            return ABSENT
        try:
            index = self._read_index()
            for shard in index["shards"]:
                for role, scan in (("records", scan_records), ("sidecar", scan_lines)):
                    if shard[role] is None:
                        if role == "sidecar" and not self.is_training:
                            raise CacheInvalid("index lists no sidecar")
                        continue
                    path = os.path.join(self.cache_dir, shard[role]["file"])
                    if not os.path.isfile(path):
                        raise CacheInvalid("%s is missing" % shard[role]["file"])
                    count, sha256 = scan(path)
                    if count != shard[role]["count"]:
                        raise CacheInvalid("%s holds %d records, the index says %d"
                                           % (shard[role]["file"], count, shard[role]["count"]))
                    if sha256 != shard[role]["sha256"]:
                        raise CacheInvalid("%s does not match its checksum" % shard[role]["file"])
        except CacheInvalid as err:
            return str(err)
        except (KeyError, TypeError) as err:
            return "index lacks %s" % err
        return None

    # -- building -------------------------------------------------------------------------------------
    def _build(self, tokenizer, dist, workers, log):
        """Featurize this rank's block of the examples into its shard; rank 0 then writes the index."""
        os.makedirs(self.cache_dir, exist_ok=True)
        examples, first = self.task.iter_examples(self.data_file, self.is_training), 0
        if dist.size > 1:
            total = sum(1 for _ in examples)
            first, end = total * dist.rank // dist.size, total * (dist.rank + 1) // dist.size
            examples = itertools.islice(self.task.iter_examples(self.data_file, self.is_training), first, end)
        stem = os.path.join(self.cache_dir, "%s.part-%05d-of-%05d" % (self.key, dist.rank, dist.size))
        encoder = ChunkEncoder(self.task, tokenizer, self.settings, self.is_training,
                               with_sidecar=not self.is_training)
        shard, stats = write_shard(stem + ".tfrecord", None if self.is_training else stem + ".sidecar.jsonl",
                                   encode_stream(examples, encoder, workers, first))
        shards = dist.allgather_objects((shard, dict(stats)))
        if dist.is_chief:
            totals = collections.Counter()
            for _, part in shards:
                totals.update(part)
            content = {"format": CACHE_FORMAT, "data_file": os.path.abspath(self.data_file),
                       "num_examples": totals["examples"], "num_features": totals["features"],
                       "stats": dict(sorted(totals.items())), "shards": [part for part, _ in shards]}
            _write_atomically(self.index_path, json.dumps({"content": content, "checksum": _index_checksum(content)},
                                                          indent=1))
            self._remove_stale_files(content["shards"])
            log("[data] %s: %d examples -> %d features in %d shard(s), cached at %s" % (
                os.path.basename(self.data_file), totals["examples"], totals["features"], len(shards),
                self.index_path))
        dist.barrier("feature-cache")

    def _remove_stale_files(self, shards):
        """Shards of this key that the index does not name (an earlier build with another number of ranks)."""
        current = {entry["file"] for shard in shards for entry in shard.values() if entry}
        for name in os.listdir(self.cache_dir):
            if name.startswith(self.key + ".part-") and name not in current:
                os.remove(os.path.join(self.cache_dir, name))

    def input_fn_builder(self, batch_size, dist, seed=0, consumed=0):
        """input_fn for the Estimator, reading this rank's shard (records rank, rank + size, ...).
        Training: the shard in ``training_order`` (a fresh permutation every epoch), repeated forever (the step
        count bounds training, so every rank runs the same number of steps whatever its shard size), starting
        after the ``consumed`` features this rank already trained on; otherwise the shard once, in order."""
        shapes = self.task.feature_shapes(self.settings)
        spec = {name: tf.FixedLenFeature(shape, tf.int64) for name, shape in shapes.items()}
        paths, is_training = self.record_files, self.is_training

        def parse(records):  # a batch at a time: one vectorized op per batch, not one per record
            parsed = tf.parse_example(records, spec)
            return {name: tf.cast(value, tf.int32) for name, value in parsed.items()}

        def shuffled_records():
            with ShardRecords(paths, dist.rank, dist.size) as records:
                for index in training_order(len(records), seed, dist.rank, consumed):
                    yield records[index]

        def input_fn(params=None):
            if is_training:
                dataset = tf.data.Dataset.from_generator(shuffled_records, tf.string, tf.TensorShape([]))
            else:
                dataset = tf.data.TFRecordDataset(paths)
                if dist.size > 1:
                    dataset = dataset.shard(dist.size, dist.rank)
            dataset = dataset.batch(batch_size, drop_remainder=is_training)
            return dataset.map(parse, num_parallel_calls=2).prefetch(2)

        return input_fn


class ShardRecords:
    """Rank ``rank``'s serialized records (positions rank, rank + size, ... of the files read in order) as a
    sequence read by position from the files: memory holds 20 bytes per record (file, offset, length), not the
    records, so the whole shard is the shuffle buffer whatever the corpus size. A context manager (closes the
    files)."""

    def __init__(self, paths, rank, size):
        files, offsets, lengths = array.array("i"), array.array("q"), array.array("q")
        position = 0
        for number, path in enumerate(paths):
            for offset, length in walk_records(path):
                if position % size == rank:
                    files.append(number)
                    offsets.append(offset + 12)  # past the length and its CRC
                    lengths.append(length)
                position += 1
        self.files, self.offsets, self.lengths = files, offsets, lengths
        self.handles = [open(path, "rb", buffering=0) for path in paths]

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, index):
        return os.pread(self.handles[self.files[index]].fileno(), self.lengths[index], self.offsets[index])

    def __iter__(self):
        return (self[index] for index in range(len(self)))

    def close(self):
        for handle in self.handles:
            handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
