"""tf_mrc.distributed: the single-process stand-in, and real 2-rank Horovod jobs (skipped without Horovod).

The Horovod tests launch tests/hvd_probe.py with ``horovodrun -np 2 -H localhost:2`` (gloo on the primary
stack, scripts/env_horovod.sh; MPI on the TF 1.13 stack, scripts/env_tf1.sh) and compare what each rank
saw with values worked out by hand in the probe's docstrings.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, horovod_job_env, horovodrun
from tf_mrc import distributed

PROBE = os.path.join(ROOT, "tests", "hvd_probe.py")
HANG_GUARD_SECONDS = 240     # a hang check only: a healthy 2-rank job here ends in well under a minute
GLOO_TIMEOUT_SECONDS = 10
LATE_SECONDS = 15            # rank 1 arrives this late at a barrier: longer than the gloo timeout


@pytest.fixture
def no_launcher(monkeypatch):
    for name in distributed.LAUNCHER_RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_without_launcher_one_process_whose_collectives_are_identities(no_launcher):
    dist = distributed.detect()
    assert isinstance(dist, distributed.SingleProcess)
    assert (dist.rank, dist.size, dist.local_rank, dist.is_chief) == (0, 1, 0, True)
    optimizer = object()
    assert dist.wrap_optimizer(optimizer, fp16_allreduce=True) is optimizer
    assert dist.training_hooks() == []
    assert dist.session_config() is None
    assert dist.allgather_objects({"a": [1, "答"]}) == [{"a": [1, "答"]}]
    assert dist.broadcast_object({"a": 2}) == {"a": 2}


def test_single_process_barrier_needs_no_collective_runtime(no_launcher, monkeypatch):
    """One process has nobody to wait for: its barrier builds no op and works where Horovod cannot import."""
    from tf_mrc.compat import tf
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", None)
    dist = distributed.detect()
    with tf.Graph().as_default() as graph:
        dist.barrier("features_written")
        assert graph.get_operations() == []


def test_single_process_fail_fast_lets_the_exception_propagate(no_launcher):
    with pytest.raises(KeyError, match="boom"):
        with distributed.detect().fail_fast():
            raise KeyError("boom")


@pytest.mark.parametrize("variable", distributed.LAUNCHER_RANK_VARIABLES)
def test_launched_as_a_rank_without_horovod_is_a_one_line_error(no_launcher, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", None)   # import fails as if not installed
    with pytest.raises(distributed.LauncherError, match=variable) as err:
        distributed.detect()
    assert "\n" not in str(err.value)


def test_empty_launcher_variable_is_not_a_launch(no_launcher, monkeypatch):
    monkeypatch.setenv("PMI_RANK", "")
    assert isinstance(distributed.detect(), distributed.SingleProcess)


def run_probe(mode, out_dir):
    """Run the 2-rank probe job; return (exit code, output, time the launcher exited)."""
    env = horovod_job_env(HOROVOD_GLOO_TIMEOUT_SECONDS=str(GLOO_TIMEOUT_SECONDS), LATE_SECONDS=str(LATE_SECONDS))
    command = [horovodrun(), "-np", "2", "-H", "localhost:2", sys.executable, PROBE, mode, str(out_dir)]
    # A session of its own, so that a hung job can be ended whole.
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        output, _ = job.communicate(timeout=HANG_GUARD_SECONDS)
    except subprocess.TimeoutExpired:
        job.terminate()   # horovodrun ends its ranks on SIGTERM; the group kill is the fallback
        try:
            output, _ = job.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            output, _ = job.communicate()
        pytest.fail("the 2-rank job hung for %d s:\n%s" % (HANG_GUARD_SECONDS, output.decode()[-3000:]))
    return job.returncode, output.decode("utf-8", "replace"), time.time()


def test_two_ranks_share_barriers_objects_and_averaged_gradients(tmp_path):
    code, output, _ = run_probe("check", tmp_path)
    assert code == 0, output[-3000:]
    reports = [json.loads((tmp_path / ("rank%d.json" % r)).read_text(encoding="utf-8")) for r in (0, 1)]
    expected_gathered = [{"rank": r, "text": "答案" * (r + 1), "values": list(range(r * 1000))} for r in (0, 1)]
    # w starts at 10 (rank 0's value, broadcast), mean gradient over ranks of (r + 1) is 1.5, learning rate 0.5.
    expected_w = 10.0 - 0.5 * 1.5
    for r, report in enumerate(reports):
        assert (report["rank"], report["size"], report["launcher_rank"]) == (r, 2, r)
        assert (report["local_rank"], report["is_chief"]) == (r, r == 0)
        assert report["gathered"] == expected_gathered
        assert report["broadcast_object"] == {"from rank": 0}
        assert report["after_broadcast"] == report["after_broadcast_fp16"] == 10.0
        assert report["after_step"] == report["after_step_fp16"] == expected_w
    # The check is only meaningful if rank 0 really waited longer than the gloo timeout at that barrier.
    assert reports[0]["waited_at_late_barrier"] > GLOO_TIMEOUT_SECONDS


@pytest.mark.parametrize("mode", ["raise", "exit", "kill"])
def test_a_failing_rank_ends_the_whole_job(tmp_path, mode):
    """Rank 1 raises (exits non-zero, is SIGKILLed) while rank 0 waits at a barrier: the job must end non-zero,
    not hang."""
    code, output, exited_at = run_probe(mode, tmp_path)
    assert code != 0, output[-3000:]
    failed_at = float((tmp_path / "failed_at").read_text())
    if mode == "raise":
        assert "rank 1 fails on purpose" in output
    print("\n[measured] %s: rank 1 failed -> horovodrun exited in %.2f s" % (mode, exited_at - failed_at))
