"""The feature cache: records and sidecar equal in-memory featurization, are byte-identical for any number of
workers or Horovod ranks, stream with bounded look-ahead, and are rebuilt (with one line saying why) when any
file does not verify."""
import itertools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from featurize_probe import SETTINGS, build
from tf_mrc import distributed, featurization
from tf_mrc.data import FeatureCache
from tf_mrc.errors import UserError
from tf_mrc.tasks import DataError, get_task
from tf_mrc.tokenization import WordPieceTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tf_mrc", "resources", "tiny")
VOCAB = os.path.join(TINY, "vocab.txt")
COPIES = 8   # 29 questions each: 232 examples, four chunks, enough for the pool to be used


def corpus(folder, as_json_lines=False):
    """The tiny passages COPIES times over (question ids made unique), as one SQuAD document or JSON lines."""
    with open(os.path.join(TINY, "passages.json"), encoding="utf-8") as f:
        articles = json.load(f)["data"]
    copies = []
    for copy in range(COPIES):
        for article in json.loads(json.dumps(articles)):
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    qa["id"] = "%s-%d" % (qa["id"], copy)
            copies.append(article)
    path = os.path.join(str(folder), "corpus.jsonl" if as_json_lines else "corpus.json")
    with open(path, "w", encoding="utf-8") as f:
        if as_json_lines:
            f.writelines(json.dumps(article, ensure_ascii=False) + "\n" for article in copies)
        else:
            json.dump({"version": "tiny", "data": copies}, f, ensure_ascii=False)
    return path


def parsed_records(paths):
    """Every record of the TFRecord ``paths`` in order, parsed by TensorFlow's own protobuf classes."""
    from tf_mrc.compat import tf
    records = []
    for path in paths:
        for serialized in tf.python_io.tf_record_iterator(path):
            example = tf.train.Example.FromString(serialized)
            records.append({name: list(feature.int64_list.value) for name, feature in example.features.feature.items()})
    return records


def file_bytes(paths):
    data = b""
    for path in paths:
        with open(path, "rb") as f:
            data += f.read()
    return data


def flat(value):
    return np.asarray(value, dtype=np.int64).reshape(-1).tolist()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feature_cache")
    data = corpus(folder)
    logged = []
    one = build(data, VOCAB, str(folder / "one_worker"), 1, distributed.SingleProcess(), logged.append)
    return {"folder": folder, "data": data, "one": one, "logged": logged}


def test_records_and_sidecar_equal_in_memory_featurization(built):
    task = get_task("cmrc2018")
    examples = task.read_examples(built["data"], False)
    reference = task.featurize(examples, WordPieceTokenizer(VOCAB), SETTINGS, False)
    cache = built["one"]
    assert cache.num_features == len(reference.arrays) and cache.stats == reference.stats
    records = parsed_records(cache.record_files)
    assert [{name: flat(value) for name, value in arrays.items()} for arrays in reference.arrays] == records
    assert list(cache.sidecar) == json.loads(json.dumps(reference.sidecar)) and len(cache.sidecar) == len(records)
    assert cache.examples[5].qid == examples[5].qid
    assert any(" examples -> %d features in 1 shard(s)" % len(records) in line for line in built["logged"])


def test_encoded_example_parses_to_the_same_values():
    from tf_mrc.compat import tf
    features = {"ids": [0, 1, 127, 128, 16383, 16384, 65535, 65536, 2 ** 40], "nested": [[1, 0], [300, -1]],
                "scalar": -1, "label": 7, "empty": []}
    parsed = tf.train.Example.FromString(featurization.encode_example(features, list(features)))
    assert {name: list(f.int64_list.value) for name, f in parsed.features.feature.items()} == {
        name: flat(value) for name, value in features.items()}


def test_any_number_of_workers_writes_the_same_bytes(built, tmp_path):
    two = build(built["data"], VOCAB, str(tmp_path / "two"), 2, distributed.SingleProcess(), lambda line: None)
    one = built["one"]
    assert file_bytes(two.record_files) == file_bytes(one.record_files)
    assert file_bytes(two.sidecar.paths) == file_bytes(one.sidecar.paths)
    with open(two.index_path) as a, open(one.index_path) as b:
        assert json.load(a) == json.load(b)


def test_json_lines_input_featurizes_like_the_json_document(built, tmp_path):
    lines = build(corpus(tmp_path, as_json_lines=True), VOCAB, str(tmp_path / "cache"), 1,
                  distributed.SingleProcess(), lambda line: None)
    assert file_bytes(lines.record_files) == file_bytes(built["one"].record_files)
    assert file_bytes(lines.sidecar.paths) == file_bytes(built["one"].sidecar.paths)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_stream_reads_ahead_a_bounded_number_of_examples(workers):
    """While the first chunk comes out, at most the chunks in flight have been read from the input."""
    task, tokenizer = get_task("cmrc2018"), WordPieceTokenizer(VOCAB)
    example = task.read_examples(os.path.join(TINY, "passages.json"), False)[0]
    read = itertools.count()

    def endless():
        while True:
            next(read)
            yield example

    encoder = featurization.ChunkEncoder(task, tokenizer, SETTINGS, False, True)
    stream = featurization.encode_stream(endless(), encoder, workers)
    first = next(stream)
    consumed = next(read)
    stream.close()
    limit = (max(3, workers * featurization.IN_FLIGHT_PER_WORKER) + 1) * featurization.CHUNK_EXAMPLES
    assert first.stats["examples"] == featurization.CHUNK_EXAMPLES and consumed <= limit


class FailingTask:
    """Features {"x": index}; the example "bad" is a data error, the example "bug" a programming error."""

    def feature_shapes(self, settings):
        return {"x": []}

    def iter_features(self, examples, tokenizer, settings, is_training, stats, first_index=0):
        for index, example in enumerate(examples, first_index):
            if example == "bad":
                raise DataError("data.json", "question %d" % index, "answers", "misaligned")
            if example == "bug":
                raise KeyError("oops")
            yield {"x": index}, {"example_index": index}


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_in_a_worker_reaches_the_caller_as_one_line_or_a_traceback(workers):
    encoder = featurization.ChunkEncoder(FailingTask(), None, None, True, False)
    examples = ["ok"] * 300
    examples[200] = "bad"
    with pytest.raises(UserError) as err:
        list(featurization.encode_stream(examples, encoder, workers))
    assert str(err.value) == "data.json: record question 200: field 'answers': misaligned"
    examples[200] = "bug"
    with pytest.raises((KeyError, featurization.WorkerFailed), match="oops"):
        list(featurization.encode_stream(examples, encoder, workers))


def corrupt(cache, how):
    """Damage one file of ``cache`` as a crash, a full disk or a bad sector would."""
    records, sidecar, index = cache.record_files[0], cache.sidecar.paths[0], cache.index_path

    def rewrite(path, change):
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(change(data))

    if how == "records_empty":
        rewrite(records, lambda data: b"")
    elif how == "records_truncated":
        rewrite(records, lambda data: data[:len(data) // 2])
    elif how == "records_bit_flip":
        rewrite(records, lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif how == "records_missing":
        os.remove(records)
    elif how == "sidecar_truncated":
        rewrite(sidecar, lambda data: data[:len(data) // 3])
    elif how == "sidecar_bit_flip":
        rewrite(sidecar, lambda data: data[:50] + bytes([data[50] ^ 4]) + data[51:])
    elif how == "index_truncated":
        rewrite(index, lambda data: data[:len(data) // 2])
    elif how == "index_empty":
        rewrite(index, lambda data: b"")
    elif how == "index_edited":   # still valid JSON, but not what was written
        rewrite(index, lambda data: data.replace(b'"num_features": ', b'"num_features": 1'))


@pytest.mark.parametrize("how, reason", [
    ("records_empty", "holds 0 records, the index says"), ("records_truncated", "ends inside record"),
    ("records_bit_flip", "does not match its checksum"), ("records_missing", "is missing"),
    ("sidecar_truncated", "records, the index says"), ("sidecar_bit_flip", "does not match its checksum"),
    ("index_truncated", "index is not valid JSON"), ("index_empty", "index is not valid JSON"),
    ("index_edited", "index checksum does not match its content")])
def test_a_damaged_cache_is_rebuilt_saying_why(built, tmp_path, how, reason):
    folder = str(tmp_path / "cache")
    shutil.copytree(os.path.dirname(built["one"].index_path), folder)
    cache = build(built["data"], VOCAB, folder, 1, distributed.SingleProcess(), lambda line: None)
    assert cache.verify() is None
    corrupt(cache, how)
    assert reason in cache.verify()
    logged = []
    again = build(built["data"], VOCAB, folder, 1, distributed.SingleProcess(), logged.append)
    assert len(logged) == 2 and "does not verify (" in logged[0] and reason in logged[0], logged
    assert logged[0].endswith("rebuilding it") and "\n" not in logged[0]
    assert again.verify() is None
    assert file_bytes(again.record_files) == file_bytes(built["one"].record_files)
    assert file_bytes(again.sidecar.paths) == file_bytes(built["one"].sidecar.paths)


def test_an_intact_cache_is_read_without_featurizing(built, tmp_path):
    folder = str(tmp_path / "cache")
    shutil.copytree(os.path.dirname(built["one"].index_path), folder)
    logged = []
    cache = FeatureCache(folder, get_task("cmrc2018"), built["data"], WordPieceTokenizer(VOCAB), SETTINGS, False,
                         distributed.SingleProcess(), log=logged.append, workers=1)
    assert logged == [] and cache.num_features == built["one"].num_features


def test_two_horovod_ranks_write_shards_that_read_as_one_process(built, tmp_path):
    """Each rank featurizes half the examples into its shard; in order, the shards are byte for byte the
    one-process cache, the sidecar line for line, and the index totals the same."""
    from conftest import horovod_job_env, horovodrun
    launcher = horovodrun()
    folder = str(tmp_path / "cache")
    command = [launcher, "-np", "2", "-H", "localhost:2", sys.executable, os.path.join(ROOT, "tests",
                                                                                       "featurize_probe.py"),
               built["data"], VOCAB, folder, "1"]
    job = subprocess.run(command, env=horovod_job_env(TF_CPP_MIN_LOG_LEVEL="2"), cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=300)
    output = job.stdout.decode("utf-8", "replace")
    assert job.returncode == 0, output[-3000:]
    cache = build(built["data"], VOCAB, folder, 1, distributed.SingleProcess(), lambda line: pytest.fail(line))
    one = built["one"]
    assert [os.path.basename(path).split(".part-")[1] for path in cache.record_files] == [
        "00000-of-00002.tfrecord", "00001-of-00002.tfrecord"]
    assert all(os.path.getsize(path) > 0 for path in cache.record_files)
    assert file_bytes(cache.record_files) == file_bytes(one.record_files)
    assert file_bytes(cache.sidecar.paths) == file_bytes(one.sidecar.paths)
    assert (cache.num_features, cache.stats) == (one.num_features, one.stats)
    assert "in 2 shard(s)" in output


@pytest.mark.parametrize("size", [1, 2, 3])
def test_shard_records_read_by_offset_equal_the_record_iterator(built, tmp_path, size):
    """The training reader keeps only offsets and reads records back by position: across several files (one
    split mid-way, a record of every length the cache holds), rank r of ``size`` gets positions r, r + size, ...
    of TensorFlow's own record iterator, byte for byte, in any access order."""
    from tf_mrc.compat import tf
    from tf_mrc.data import ShardRecords
    expected = [record for path in built["one"].record_files for record in tf.python_io.tf_record_iterator(path)]
    paths = [str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")]
    for path, part in zip(paths, (expected[:7], expected[7:])):
        with tf.python_io.TFRecordWriter(path) as writer:
            for record in part:
                writer.write(record)
    for rank in range(size):
        with ShardRecords(paths, rank, size) as shard:
            assert len(shard) == len(expected[rank::size])
            assert list(shard) == expected[rank::size]
            backwards = [shard[index] for index in reversed(range(len(shard)))]
            assert backwards == expected[rank::size][::-1]


INTERRUPTED_STREAM = r"""
import multiprocessing, sys, time
sys.path.insert(0, sys.argv[1])
from tf_mrc import featurization, restart


class SlowTask:
    def feature_shapes(self, settings):
        return {"x": []}

    def iter_features(self, examples, tokenizer, settings, is_training, stats, first_index=0):
        for index, example in enumerate(examples, first_index):
            time.sleep(0.001)
            yield {"x": index}, {"example_index": index}


with restart.sigterm_as_interrupt():
    try:
        busy = sys.argv[2] == "busy"   # else the workers, done, wait for work while the parent is elsewhere
        stream = featurization.encode_stream(range(10 ** 6 if busy else 4 * featurization.CHUNK_EXAMPLES),
                                             featurization.ChunkEncoder(SlowTask(), None, None, True, False), 2)
        next(stream)
        print(" ".join(str(child.pid) for child in multiprocessing.active_children()), flush=True)
        for _ in stream if busy else []:
            pass
        time.sleep(60)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
"""


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not featurization.POOL_AVAILABLE, reason="featurization stays in one process here")
@pytest.mark.parametrize("workers_are", ["busy", "idle"])
@pytest.mark.parametrize("how", ["ctrl_c", "sigterm", "sigkill"])
def test_a_run_stopped_while_its_pool_featurizes_leaves_no_worker_and_no_traceback(how, workers_are):
    """Ctrl-C reaches the whole process group, workers included; a scheduler's SIGTERM and the OOM killer's
    SIGKILL reach the run's process alone. Either way the run stops with its own one line (no traceback from a
    worker) and no worker outlives it: an orphaned worker would wait forever for work, holding the output pipe
    of ``python run_finetune.py ... | tee log`` open, so that the pipeline never ended."""
    import signal
    import time
    job = subprocess.Popen([sys.executable, "-c", INTERRUPTED_STREAM, ROOT, workers_are], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, start_new_session=True)
    workers = []
    try:
        workers = [int(pid) for pid in job.stdout.readline().split()]
        assert len(workers) == 2, job.stderr.read()
        time.sleep(1.0 if workers_are == "idle" else 0.3)
        if how == "ctrl_c":
            os.killpg(job.pid, signal.SIGINT)
        else:
            os.kill(job.pid, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        out, err = job.communicate(timeout=30)   # returns once nothing holds the pipes open
        deadline = time.time() + 5
        while any(_alive(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)]
    finally:   # whatever happened, leave nothing running
        for pid in [job.pid] + workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    if how != "sigkill":
        assert (job.returncode, out.strip(), err) == (130, "interrupted", "")
