"""Examples -> encoded features, streamed, on one core or a pool of processes.

A stream of examples is cut into chunks; each chunk becomes serialized ``tf.train.Example`` records and (for
prediction data) sidecar lines, in example order whatever the number of workers, so the output of N workers
is byte for byte that of one. At most a few chunks are in flight, so memory stays bounded for any corpus size.

This module imports no TensorFlow: the records are encoded here directly in the protobuf wire format (an
Example is a map of name -> Int64List), which keeps worker processes light.
"""
import collections
import itertools
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback

from tf_mrc.errors import UserError

CHUNK_EXAMPLES = 64       # examples per unit of work handed to a worker
IN_FLIGHT_PER_WORKER = 3  # chunks queued per worker: keeps workers busy while bounding memory


def available_cores():
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# -- the tf.train.Example wire format ------------------------------------------------------------------
def _encode_varint(value):
    """Protobuf varint of a non-negative int (negative int64s arrive here as their two's complement)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [_encode_varint(value) for value in range(1 << 16)]   # ids, masks, lengths: a table look-up
_INT64_MASK = (1 << 64) - 1


def _varint(value):
    return _SMALL_VARINTS[value] if 0 <= value < 65536 else _encode_varint(int(value) & _INT64_MASK)


def _packed_varints(values):
    """The varints of int64 ``values`` (an int or nested lists of ints) back to back."""
    if not isinstance(values, list):
        values = [values]
    elif values and isinstance(values[0], list):
        values = list(itertools.chain.from_iterable(values))
    if values and min(values) >= 0 and max(values) < 0x80:
        return bytes(values)   # masks, segment ids: one byte each
    table = _SMALL_VARINTS
    return b"".join([table[v] if 0 <= v < 65536 else _encode_varint(int(v) & _INT64_MASK) for v in values])


def _field(number, payload):
    """A length-delimited protobuf field."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def encode_example(features, names):
    """``features[name]`` (ints or nested int lists) for each of ``names``, as a serialized tf.train.Example
    whose features are Int64Lists, in ``names`` order."""
    entries = []
    for name in names:
        int64_list = _field(1, _packed_varints(features[name]))     # Int64List.value (packed)
        feature = _field(3, int64_list)                             # Feature.int64_list
        entries.append(_field(1, _field(1, name.encode("utf-8")) + _field(2, feature)))  # map entry
    return _field(1, b"".join(entries))                             # Example.features


def encode_sidecar(record):
    """One sidecar record as one line of JSON (no newline inside: JSON escapes those in strings)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


# -- featurizing chunks --------------------------------------------------------------------------------
EncodedChunk = collections.namedtuple("EncodedChunk", ["records", "sidecar_lines", "stats"])


class ChunkEncoder:
    """Featurizes and encodes one chunk of consecutive examples; the same object runs in every worker."""

    def __init__(self, task, tokenizer, settings, is_training, with_sidecar):
        self.task, self.tokenizer, self.settings = task, tokenizer, settings
        self.is_training, self.with_sidecar = is_training, with_sidecar
        self.names = list(task.feature_shapes(settings))

    def __call__(self, first_index, examples):
        records, sidecar_lines, stats = [], [], collections.Counter()
        for features, record in self.task.iter_features(examples, self.tokenizer, self.settings, self.is_training,
                                                        stats, first_index):
            records.append(encode_example(features, self.names))
            if self.with_sidecar:
                sidecar_lines.append(encode_sidecar(record))
        stats["examples"] += len(examples)
        stats["features"] += len(records)
        return EncodedChunk(records, sidecar_lines, stats)


_WORKER_ENCODER = None


def _start_worker(encoder, parent):
    """A pool worker's set-up. Only the parent handles Ctrl-C and SIGTERM (it then terminates the pool, whose
    SIGTERM just ends the worker, with no traceback of its own); and a worker whose parent is gone (SIGKILL, the
    OOM killer, a failing Horovod rank's os._exit) ends too, instead of waiting forever for work that will not
    come while holding the run's output pipe open."""
    global _WORKER_ENCODER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _WORKER_ENCODER = encoder
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent, interval=0.5):
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _encode_in_worker(first_index, examples):
    """A chunk's EncodedChunk, or (is_user_error, message) for the parent to raise: exception classes with
    their own constructor arguments (DataError) do not survive pickling."""
    try:
        return _WORKER_ENCODER(first_index, examples)
    except UserError as err:
        return True, str(err)
    except Exception:   # noqa: BLE001 - a bug: the parent raises it with this traceback
        return False, traceback.format_exc()


class WorkerFailed(Exception):
    """A featurization worker raised something other than a UserError (the message holds its traceback)."""


def _chunks(examples, first_index):
    chunk, start = [], first_index
    for example in examples:
        chunk.append(example)
        if len(chunk) == CHUNK_EXAMPLES:
            yield start, chunk
            start += len(chunk)
            chunk = []
    if chunk:
        yield start, chunk


# A process pool needs fork (Linux) and Python >= 3.8: 3.7's Pool.terminate() was seen to hang after its
# workers had exited when a stream was closed early; there featurization stays in this process.
POOL_AVAILABLE = "fork" in multiprocessing.get_all_start_methods() and sys.version_info >= (3, 8)


def encode_stream(examples, encoder, workers, first_index=0):
    """Yield EncodedChunks for ``examples`` (any iterable, consumed lazily) in example order; example indices
    count from ``first_index``. ``workers`` > 1 featurizes in that many forked processes (fork: the workers
    inherit the task and tokenizer and never touch TensorFlow); a stream of one or two chunks, where a pool
    costs more than it saves, stays in this process."""
    chunks = _chunks(examples, first_index)
    head = list(itertools.islice(chunks, 3))
    chunks = itertools.chain(head, chunks)
    if workers <= 1 or len(head) <= 2 or not POOL_AVAILABLE:
        for start, chunk in chunks:
            yield encoder(start, chunk)
        return
    pool = multiprocessing.get_context("fork").Pool(workers, initializer=_start_worker,
                                                      initargs=(encoder, os.getpid()))
    try:
        pending = collections.deque()
        for item in chunks:
            pending.append(pool.apply_async(_encode_in_worker, item))
            if len(pending) == workers * IN_FLIGHT_PER_WORKER:
                yield _worker_result(pending.popleft().get())
        while pending:
            yield _worker_result(pending.popleft().get())
    finally:
        pool.terminate()
        pool.join()


def _worker_result(result):
    if not isinstance(result, EncodedChunk):
        is_user_error, message = result
        raise UserError(message) if is_user_error else WorkerFailed(message)
    return result
