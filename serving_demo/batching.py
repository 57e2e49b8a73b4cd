"""Dynamic batching: the windows of concurrent requests share model runs.

Request threads featurize on their own, hand their windows to ``DynamicBatcher.run`` and post-process what
comes back, so answers go through exactly the code evaluation uses; only the grouping of windows into model
runs changes. One batcher thread collects windows for at most ``window_s`` after the first one waits (or
until ``max_batch`` are there), runs them in one ``run_batch`` call and hands each request its outputs.
"""
import collections
import threading
import time


class Busy(Exception):
    """The queue holds as many windows as it may: the request should be retried later."""


class _Job:
    def __init__(self, arrays):
        self.arrays = arrays
        self.outputs = [None] * len(arrays)
        self.taken = 0          # windows handed to a model run so far
        self.filled = 0         # windows whose outputs came back
        self.error = None
        self.done = threading.Event()


class DynamicBatcher:
    """``run(arrays)`` for many threads at once, ``run_batch(arrays)`` (one model run) underneath."""

    def __init__(self, run_batch, max_batch, window_s=0.005, max_queued=512):
        self._run_batch = run_batch
        self.max_batch, self.window_s, self.max_queued = max_batch, window_s, max_queued
        self._jobs = collections.deque()
        self._queued = 0        # windows waiting, not yet in a model run
        self._arrived = None    # when the oldest waiting window arrived
        self._closed = False
        self._lock = threading.Condition()
        self.batch_sizes = collections.Counter()   # model-run size -> count, for the bench and the tests
        self._thread = threading.Thread(target=self._loop, name="dynamic-batcher", daemon=True)
        self._thread.start()

    def run(self, arrays):
        """The per-window outputs of ``arrays``, in order; raises Busy when the queue is full."""
        if not arrays:
            return []
        job = _Job(arrays)
        with self._lock:
            if self._closed:
                raise Busy("the server is shutting down")
            if self._queued + len(arrays) > self.max_queued:
                raise Busy("%d windows are waiting for the model (at most %d may wait); retry shortly"
                           % (self._queued, self.max_queued))
            if not self._queued:
                self._arrived = time.monotonic()
            self._jobs.append(job)
            self._queued += len(arrays)
            self._lock.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.outputs

    def close(self):
        """Stop the batcher thread once the waiting windows have run."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout=30)

    def _next_batch(self):
        """[(job, first window, count)] of the next model run, or None once closed and drained."""
        with self._lock:
            while not self._queued:
                if self._closed:
                    return None
                self._lock.wait()
            deadline = self._arrived + self.window_s
            while self._queued < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            parts, room = [], self.max_batch
            while self._jobs and room:
                job = self._jobs[0]
                count = min(room, len(job.arrays) - job.taken)
                parts.append((job, job.taken, count))
                job.taken += count
                room -= count
                if job.taken == len(job.arrays):
                    self._jobs.popleft()
            self._queued -= self.max_batch - room
            self._arrived = time.monotonic() if self._queued else None
            return parts

    def _loop(self):
        while True:
            parts = self._next_batch()
            if parts is None:
                return
            arrays = [array for job, first, count in parts for array in job.arrays[first:first + count]]
            try:
                outputs = self._run_batch(arrays)
                error = None
            except Exception as err:  # handed to the waiting requests, which answer 500
                outputs, error = None, err
            self.batch_sizes[len(arrays)] += 1
            position = 0
            for job, first, count in parts:
                if error is not None:
                    job.error = error
                else:
                    job.outputs[first:first + count] = outputs[position:position + count]
                position += count
                job.filled += count
                if job.filled == len(job.arrays) or error is not None:
                    job.done.set()
