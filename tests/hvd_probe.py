"""One rank of a small Horovod job, launched by tests/test_distributed.py through horovodrun.

    horovodrun -np 2 -H localhost:2 python tests/hvd_probe.py MODE OUT_DIR

MODE check: exercise every collective of tf_mrc.distributed and write OUT_DIR/rank<R>.json with what
this rank saw; rank 1 reaches the second barrier only after LATE_SECONDS (set it longer than the gloo
timeout: a slow rank is not a failure).
MODE raise / exit / kill: rank 1 fails after a first barrier (raises inside fail_fast / calls sys.exit(3), as a
user error does / SIGKILLs itself) while rank 0 waits at a second barrier; rank 1 writes the time of its failure to OUT_DIR/failed_at. When it
raises or exits, a non-daemon thread is still running in it (as input-pipeline or writer threads may be), which
would keep a plainly exiting interpreter, and so the whole job, alive.
"""
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tf_mrc import distributed  # noqa: E402
from tf_mrc.compat import tf  # noqa: E402

LEARNING_RATE = 0.5


def launcher_rank():
    """The global rank as the launcher announced it, independent of Horovod's own answer."""
    for name in distributed.LAUNCHER_RANK_VARIABLES:
        if os.environ.get(name):
            return int(os.environ[name])
    return None


def one_training_step(dist, fp16_allreduce):
    """Rank r starts w at r + 10 and minimises (r + 1) * w with SGD for one step.

    The broadcast hook must first set w to rank 0's 10 everywhere; the wrapped optimizer must then apply the
    mean gradient over ranks, mean(r + 1), so every rank ends at 10 - LEARNING_RATE * mean(r + 1).
    """
    with tf.Graph().as_default():
        w = tf.get_variable("w", initializer=tf.constant(float(dist.rank + 10)))
        loss = float(dist.rank + 1) * w
        optimizer = dist.wrap_optimizer(tf.train.GradientDescentOptimizer(LEARNING_RATE), fp16_allreduce)
        train_op = optimizer.minimize(loss, global_step=tf.train.get_or_create_global_step())
        with tf.train.MonitoredTrainingSession(hooks=dist.training_hooks(), config=dist.session_config(),
                                               save_checkpoint_secs=None, save_summaries_steps=None,
                                               log_step_count_steps=None) as session:
            after_broadcast = float(session.run(w))
            session.run(train_op)
            after_step = float(session.run(w))
    return after_broadcast, after_step


def main(mode, out_dir):
    dist = distributed.detect()
    with dist.fail_fast():
        if mode == "check":
            dist.barrier("start")
            if dist.rank == 1:
                time.sleep(float(os.environ.get("LATE_SECONDS", "0")))
            entered_late_barrier = time.time()
            dist.barrier("late")
            waited = time.time() - entered_late_barrier
            gathered = dist.allgather_objects({"rank": dist.rank, "text": "答案" * (dist.rank + 1),
                                               "values": list(range(dist.rank * 1000))})
            broadcast_object = dist.broadcast_object({"from rank": dist.rank})
            broadcast, step = one_training_step(dist, fp16_allreduce=False)
            broadcast16, step16 = one_training_step(dist, fp16_allreduce=True)
            dist.barrier("end")
            report = {"rank": dist.rank, "size": dist.size, "local_rank": dist.local_rank,
                      "is_chief": dist.is_chief, "launcher_rank": launcher_rank(), "gathered": gathered,
                      "broadcast_object": broadcast_object,
                      "waited_at_late_barrier": waited, "after_broadcast": broadcast, "after_step": step,
                      "after_broadcast_fp16": broadcast16, "after_step_fp16": step16}
            with open(os.path.join(out_dir, "rank%d.json" % dist.rank), "w", encoding="utf-8") as f:
                json.dump(report, f, ensure_ascii=False)
        elif mode in ("raise", "exit", "kill"):
            dist.barrier("before_failure")
            if dist.rank == 1:
                with open(os.path.join(out_dir, "failed_at"), "w") as f:
                    f.write(repr(time.time()))
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                threading.Thread(target=time.sleep, args=(3600,), daemon=False).start()
                if mode == "exit":
                    sys.exit(3)
                raise ValueError("rank 1 fails on purpose")
            dist.barrier("never_reached_by_rank_1")
        else:
            raise SystemExit("unknown mode %r" % mode)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
