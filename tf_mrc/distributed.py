"""Multi-worker training through Horovod; a single-process stand-in when not launched by horovodrun.

Everything that differs between one process and N ranks goes through ``detect()``'s object, so the
training, caching and prediction code has no Horovod branches of its own.

Works with Horovod 0.28.1 (gloo, TF 2.15 in compat.v1 graph mode) and 0.19.5 (MPI, TF 1.13): the
collectives below use only ``allreduce``/``allgather`` in a throw-away graph, which both versions have.

Why a failing rank does not hang the others (tests/hvd_probe.py and tests/test_distributed.py check it; the
README's "Measured behind the code" gives the times):
  * A rank that raises exits non-zero (``fail_fast`` makes sure it exits even if a non-daemon thread would
    keep the interpreter, and so the whole job, alive). horovodrun (gloo, non-elastic) then terminates every
    other rank, and mpirun does the same for MPI jobs; a rank blocked in a collective whose peer died also
    gets "Horovod has been shut down" as soon as the peer's sockets close.
  * ``HOROVOD_GLOO_TIMEOUT_SECONDS`` (default 30, scripts/env_horovod.sh sets 60) bounds gloo's
    rendezvous in ``hvd.init()`` (the first rank there waits that long for the last), and horovodrun's
    ``--start-timeout`` (``HOROVOD_START_TIMEOUT``, default 30 s, env_horovod.sh 60) bounds its checks of
    the hosts (ssh, network interfaces) before it starts the ranks. Neither limits how long a rank may
    work between collectives: Horovod's background thread keeps negotiating, so a slow rank 0 (writing
    the feature cache while the others wait in ``barrier``) is fine; the probe test checks this with a
    rank arriving 15 s late under a 10 s gloo timeout.
  * A rank that stays alive but never reaches a collective (ranks running different numbers of steps,
    only rank 0 evaluating) is not a failure Horovod can see. Its stall inspector
    (``HOROVOD_STALL_CHECK_TIME_SECONDS`` / ``HOROVOD_STALL_SHUTDOWN_TIME_SECONDS``) is meant to report
    and end such a job, but does not end a job whose rank sits outside every collective. So the callers must give
    every rank the same sequence of collectives (equal step counts, every rank in every barrier), and
    a scheduler or CI bounds the wall time of the whole job.
  * Elastic mode stays off (no ``--min-np``/``--host-discovery-script``): elastic horovodrun keeps the
    surviving ranks running instead of ending the job.
"""
import contextlib
import os
import pickle
import re
import sys
import traceback

from tf_mrc.errors import UserError

# Set by horovodrun (gloo), Open MPI's mpirun, MPICH/Intel MPI (PMI) and PMIx launchers respectively.
LAUNCHER_RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


class SingleProcess:
    """The one-process case: rank 0 of 1; every collective is the identity."""
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    is_chief = True

    def barrier(self, name="barrier"):
        """Block until every rank reaches this point (feature cache written, outputs read)."""

    def wrap_optimizer(self, optimizer, fp16_allreduce=False):
        return optimizer

    def training_hooks(self):
        return []

    def session_config(self):
        return None

    def allgather_objects(self, obj):
        """Every rank's ``obj`` in rank order."""
        return [obj]

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank: a decision only rank 0 can make (which checkpoint its run directory
        holds, whether training already finished) taken once, so every rank then runs the same collectives."""
        return self.allgather_objects(obj if self.is_chief else None)[0]

    @contextlib.contextmanager
    def fail_fast(self):
        """Wrap a rank's whole run: with one process an exception simply propagates."""
        yield


class Horovod(SingleProcess):
    """N ranks launched by horovodrun or mpirun.

    ``rank`` is the global rank (data sharding, who writes checkpoints and outputs); ``local_rank`` is the
    index on this host and is used only to pick this rank's GPU.
    """

    def __init__(self, hvd):
        self._hvd = hvd
        hvd.init()
        self.rank = hvd.rank()
        self.size = hvd.size()
        self.local_rank = hvd.local_rank()
        self.local_size = hvd.local_size()
        self.is_chief = self.rank == 0

    def _run_collective(self, build):
        """Run the Horovod ops made by ``build()`` -> (fetches, feed_dict) once, in a graph of their own.

        A separate graph keeps these ops out of the Estimator's model graph, and pinning them to the CPU
        keeps the session from allocating GPU memory before the model does.
        """
        from tf_mrc.compat import tf
        graph = tf.Graph()
        with graph.as_default(), tf.device("/cpu:0"):
            fetches, feed_dict = build()
        with tf.Session(graph=graph, config=self.session_config()) as session:
            return session.run(fetches, feed_dict=feed_dict)

    def barrier(self, name="barrier"):
        """Block until every rank reaches ``barrier(name)``; ranks waiting at different names stall
        visibly (Horovod's stall warning names the tensor ``barrier_<name>``)."""
        from tf_mrc.compat import tf
        hvd = self._hvd
        op_name = "barrier_" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        arrived = self._run_collective(
            lambda: (hvd.allreduce(tf.constant(1, tf.int32, name=op_name), op=hvd.Sum), None))
        if arrived != self.size:
            raise RuntimeError("barrier %r: %d of %d ranks arrived" % (name, arrived, self.size))

    def wrap_optimizer(self, optimizer, fp16_allreduce=False):
        """Average gradients over ranks; ``fp16_allreduce`` halves the bytes sent (gradients cast to fp16)."""
        hvd = self._hvd
        compression = hvd.Compression.fp16 if fp16_allreduce else hvd.Compression.none
        return hvd.DistributedOptimizer(optimizer, compression=compression)

    def training_hooks(self):
        """Start every rank from rank 0's initial (or warm-started) variables."""
        return [self._hvd.BroadcastGlobalVariablesHook(0)]

    def session_config(self):
        """One GPU per rank, memory grown on demand; None on a build without CUDA (nothing to place)."""
        from tf_mrc.compat import tf
        if not tf.test.is_built_with_cuda():
            return None
        config = tf.ConfigProto()
        config.gpu_options.visible_device_list = str(self.local_rank)
        config.gpu_options.allow_growth = True
        return config

    def allgather_objects(self, obj):
        """Every rank's ``obj`` (anything picklable) in rank order, e.g. each rank's share of predictions."""
        import numpy as np
        from tf_mrc.compat import tf
        hvd = self._hvd
        payload = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)

        def build():
            size = tf.placeholder(tf.int64, [1])
            data = tf.placeholder(tf.uint8, [None])
            fetches = (hvd.allgather(size, name="allgather_objects_sizes"),
                       hvd.allgather(data, name="allgather_objects_data"))
            return fetches, {size: [payload.size], data: payload}

        sizes, data = self._run_collective(build)
        ends = np.cumsum(sizes)
        return [pickle.loads(data[end - size:end].tobytes()) for size, end in zip(sizes, ends)]

    @contextlib.contextmanager
    def fail_fast(self):
        """Wrap a rank's whole run: on any exception print it and leave the process at once (exit status 1;
        a non-zero ``SystemExit`` keeps its status).

        ``os._exit`` skips interpreter shutdown, which would wait for non-daemon threads and run Horovod's
        own shutdown; the launcher sees the exit status and ends the other ranks.
        """
        try:
            yield
        except SystemExit as stop:
            # sys.exit(0) ends the run normally; a non-zero exit (a user error, already reported on stderr)
            # must end this rank as promptly as an exception, even while the other ranks wait in a collective.
            if stop.code in (None, 0):
                raise
            if not isinstance(stop.code, int):
                sys.stderr.write("%s\n" % stop.code)
            self._exit_now(stop.code if isinstance(stop.code, int) else 1)
        except BaseException:  # KeyboardInterrupt too: this rank must end either way
            sys.stderr.write("[rank %d] %s" % (self.rank, traceback.format_exc()))
            self._exit_now(1)

    @staticmethod
    def _exit_now(status):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


class LauncherError(UserError):
    """Launched by a multi-process launcher but Horovod cannot be used; one line for the user."""


def launched_by_horovod():
    """True when a horovodrun/mpirun-style launcher started this process."""
    return any(os.environ.get(name) not in (None, "") for name in LAUNCHER_RANK_VARIABLES)


def detect():
    """The running configuration: Horovod when launched by horovodrun/mpirun, else SingleProcess."""
    if not launched_by_horovod():
        return SingleProcess()
    try:
        import horovod.tensorflow as hvd
    except ImportError as err:
        launcher = next(name for name in LAUNCHER_RANK_VARIABLES if os.environ.get(name))
        # Running N copies as independent single processes would train N models into one model_dir.
        raise LauncherError("launched as one of several ranks (%s is set) but horovod.tensorflow does not "
                            "import (%s); install it (scripts/env_horovod.sh) or run without the launcher"
                            % (launcher, err))
    return Horovod(hvd)
