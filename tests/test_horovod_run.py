"""run_finetune.py under ``horovodrun -np 2`` on the tiny data, against one process (skipped without Horovod).

Why the two runs can be compared at all: with rank-sharded, shuffled input the two layouts see different
batches, so their weights would differ for reasons that say nothing about correctness. Here every optimizer
step sees the whole training set on both: 28 features and the same command line, --train_batch_size=28 (the
global batch): one process trains micro-batches of 28, two ranks micro-batches of 14 over shards of exactly 14
(each rank's micro-batch is its whole shard, the gradient mean over the ranks is the mean over the 28
features). Both score the dev set once during training (--eval_every_epochs=15, at step 15) and keep the best
checkpoint. Dropout is off (a --config_file override) and both start from the same weights
(the two-rank job loads the one-process run's step-0 checkpoint: op-level random seeds depend on how many ops
the input pipeline made, which sharding changes). What remains is float summation order (one batch mean vs a
mean of two shard means), so the weights agree to float precision after 30 AdamW steps (measured max |diff|
2.7e-6 and 4.2e-6 in two runs on TF 2.15, checked against 1e-4), and prediction, which runs sharded over 29
features (not divisible by two), agrees to 1e-4 in every n-best probability with identical answer texts.

The same file runs on the TF 1.13 stack (Horovod 0.19.5, horovodrun over mpirun; scripts/env_tf1.sh).
"""
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

from conftest import ROOT, horovod_job_env, horovodrun

TINY = os.path.join(ROOT, "tf_mrc", "resources", "tiny")
HANG_GUARD_SECONDS = 300     # a hang check only: these jobs end in well under a minute here
STEPS = 30                   # 28 features x 30 epochs / global batch 28
WEIGHT_TOLERANCE = 1e-4
PROBABILITY_TOLERANCE = 1e-4
# One output line of a rank under horovodrun: "[1]<stdout>:..." (gloo) or "[1,1]<stdout>:..." (mpirun).
RANK_LINE = re.compile(r"^\[(?:\d+,)?(\d+)\]<std(?:out|err)>:(.*)$")


def tiny_data(folder):
    """train28.json (the shipped passages less one question: 28 single-window features) and a config with
    the tiny preset's shape and no dropout."""
    with open(os.path.join(TINY, "passages.json"), encoding="utf-8") as f:
        passages = json.load(f)
    passages["data"][-1]["paragraphs"][-1]["qas"].pop()
    train = os.path.join(folder, "train28.json")
    with open(train, "w", encoding="utf-8") as f:
        json.dump(passages, f, ensure_ascii=False)
    config = os.path.join(folder, "no_dropout.json")
    with open(config, "w") as f:
        json.dump({"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128,
                   "max_position_embeddings": 128, "hidden_dropout_prob": 0.0,
                   "attention_probs_dropout_prob": 0.0}, f)
    return train, config


def finetune_args(data, out_dir, *extra):
    train, config = data
    return ["--task=cmrc2018", "--model=tiny", "--config_file=" + config, "--train_file=" + train,
            "--dev_file=" + os.path.join(TINY, "passages.json"), "--vocab_file=" + os.path.join(TINY, "vocab.txt"),
            "--output_dir=" + out_dir, "--max_seq_length=128", "--doc_stride=32", "--max_query_length=32",
            "--num_train_epochs=30", "--train_batch_size=28", "--eval_every_epochs=15", "--log_every=10"] + list(extra)


class Job:
    """A finished run_finetune job: exit code, output, wall time, the lines of each rank, its TMPDIR."""

    def __init__(self, code, output, seconds, tmpdir):
        self.code, self.output, self.seconds, self.tmpdir = code, output, seconds, tmpdir
        self.rank_lines = {}
        for line in output.splitlines():
            match = RANK_LINE.match(line)
            if match:
                self.rank_lines.setdefault(int(match.group(1)), []).append(match.group(2))

    def lines(self, rank):
        return self.rank_lines.get(rank, [])


def job_tmpdir():
    # Short on purpose: Open MPI puts its session directory (with unix sockets, 108 characters at most) here.
    return tempfile.mkdtemp(prefix="hvdjob")


def run_finetune(args, ranks):
    """run_finetune.py in one process (ranks=0: no launcher) or under horovodrun -np ranks."""
    tmpdir = job_tmpdir()
    env = horovod_job_env(TMPDIR=tmpdir, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    script = [sys.executable, os.path.join(ROOT, "run_finetune.py")] + args
    command = script if not ranks else [horovodrun(), "-np", str(ranks), "-H", "localhost:%d" % ranks] + script
    started = time.time()
    job = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        output, _ = job.communicate(timeout=HANG_GUARD_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        output, _ = job.communicate()
        pytest.fail("the job hung for %d s:\n%s" % (HANG_GUARD_SECONDS, output.decode()[-3000:]))
    result = Job(job.returncode, output.decode("utf-8", "replace"), time.time() - started, tmpdir)
    print("\n[measured] %s: %.1f s wall" % ("np=%d" % ranks if ranks else "one process", result.seconds))
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-process reference and the two-rank job from its initial weights, both with global batch 28."""
    horovodrun()
    folder = str(tmp_path_factory.mktemp("horovod_run"))
    data = tiny_data(folder)
    one = os.path.join(folder, "one_process")
    reference = run_finetune(finetune_args(data, one, "--do_train", "--do_eval", "--do_predict"), ranks=0)
    assert reference.code == 0, reference.output[-3000:]
    two = os.path.join(folder, "two_ranks")
    job = run_finetune(finetune_args(data, two, "--do_train", "--do_eval", "--do_predict",
                                     "--init_checkpoint=" + os.path.join(one, "model.ckpt-0")), ranks=2)
    assert job.code == 0, job.output[-3000:]
    return {"folder": folder, "data": data, "one": one, "two": two, "reference": reference, "job": job}


def checkpoint_weights(path):
    """Every model weight of a checkpoint (optimizer slots and the step counter left out)."""
    from tf_mrc.compat import tf
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not re.search(r"(adam_[mv]|global_step)$", name)}


def max_weight_difference(a, b):
    first, second = checkpoint_weights(a), checkpoint_weights(b)
    assert sorted(first) == sorted(second)
    return max(float(np.max(np.abs(first[name] - second[name]))) for name in first)


def read_json(folder, name):
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return json.load(f)


def assert_same_nbest(expected, actual, tolerance):
    """Same questions, same candidate texts in the same order, probabilities within ``tolerance``; returns the
    largest probability difference."""
    assert sorted(expected) == sorted(actual)
    worst = 0.0
    for qid in expected:
        assert [c["text"] for c in expected[qid]] == [c["text"] for c in actual[qid]], qid
        worst = max([worst] + [abs(a["probability"] - b["probability"]) for a, b in zip(expected[qid], actual[qid])])
    assert worst <= tolerance
    return worst


def test_two_ranks_train_the_model_one_process_trains_with_the_same_global_batch(runs):
    reference, job = runs["reference"], runs["job"]
    # The same step count from the same feature count and command line, and the batch's split in the log.
    assert any("28 features, global batch 28 = micro-batch 14 x 2 workers x 1 accumulated, %d steps" % STEPS
               in line for line in job.lines(0))
    assert any("28 features, global batch 28 = micro-batch 28 x 1 workers x 1 accumulated, %d steps" % STEPS
               in line for line in reference.output.splitlines())
    # The evaluation during training ran on both ranks and chose the same best checkpoint.
    assert any(line.startswith("[eval] step 15 (epoch 15.00)") for line in job.lines(0))
    assert read_json(runs["two"], "best/best.json") == read_json(runs["one"], "best/best.json")
    final = "model.ckpt-%d" % STEPS
    difference = max_weight_difference(os.path.join(runs["one"], final), os.path.join(runs["two"], final))
    print("\n[measured] max |weight difference| after %d steps: %.2g" % (STEPS, difference))
    assert difference <= WEIGHT_TOLERANCE
    worst = assert_same_nbest(read_json(runs["one"], "dev_nbest_predictions.json"),
                              read_json(runs["two"], "dev_nbest_predictions.json"), PROBABILITY_TOLERANCE)
    print("[measured] max |n-best probability difference|: %.2g" % worst)
    assert read_json(runs["two"], "dev_predictions.json") == read_json(runs["one"], "dev_predictions.json")
    assert read_json(runs["two"], "eval_results.json") == read_json(runs["one"], "eval_results.json")
    # --do_predict answers with the best checkpoint on both
    assert read_json(runs["two"], "predictions.json") == read_json(runs["one"], "predictions.json")


def output_names(folder):
    """The files under ``folder``, TensorBoard event files by kind (their names hold a time and a host) and
    feature-cache shards by cache (each rank writes its own shard of every cache)."""
    names = set()
    for base, _, files in os.walk(folder):
        for name in files:
            relative = os.path.relpath(os.path.join(base, name), folder)
            relative = re.sub(r"\.part-\d+-of-\d+\.", ".part-*.", relative)
            names.add(re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents.*", relative))
    return sorted(names)


def cache_shards(folder):
    return sorted(name for name in os.listdir(os.path.join(folder, "cache")) if ".part-" in name)


def test_only_rank_0_writes_and_rank_1_leaves_nothing_behind(runs):
    job = runs["job"]
    # The one-process run wrote the same files; one training and one evaluation events file each.
    assert output_names(runs["two"]) == output_names(runs["one"])
    assert output_names(runs["two"]).count("events.out.tfevents.*") == 1
    assert "eval/events.out.tfevents.*" in output_names(runs["two"]) and "best/best.json" in output_names(runs["two"])
    # the training cache and the dev cache: one record shard per rank, and a sidecar shard per rank for dev
    assert sorted(name.split(".part-")[1] for name in cache_shards(runs["two"])) == sorted(
        ["00000-of-00002.tfrecord", "00001-of-00002.tfrecord"] * 2 +
        ["00000-of-00002.sidecar.jsonl", "00001-of-00002.sidecar.jsonl"])
    writer_lines = ("[data]", "[train]", "[eval]", "[predict]", "[run]")
    assert not [line for line in job.lines(1) if line.startswith(writer_lines)], job.lines(1)
    assert any(line.startswith("[predict] 29 answers") for line in job.lines(0))
    # Rank 1's private Estimator directory is gone.
    assert not [name for name in os.listdir(job.tmpdir) if name.startswith("tf_mrc_rank")]
    assert any("2 Horovod workers; learning rate 0.001 (not scaled; --lr_scale_with_workers would multiply it "
               "by 2)" in line for line in job.lines(0))


def test_starting_a_finished_run_again_skips_training_on_every_rank(runs):
    """Rank 0 finds its checkpoint at the last step and must not leave rank 1 training alone (that hung); both
    ranks then predict from rank 0's checkpoint, sharded in batches of 4, exactly as one process did."""
    again = os.path.join(runs["folder"], "again")
    shutil.copytree(runs["one"], again)
    job = run_finetune(finetune_args(runs["data"], again, "--do_train", "--do_eval", "--do_predict",
                                     "--predict_batch_size=4", "--lr_scale_with_workers"), ranks=2)
    assert job.code == 0, job.output[-3000:]
    assert any("already holds step %d of %d: training skipped" % (STEPS, STEPS) in line for line in job.lines(0))
    assert any("learning rate 0.001 x 2 workers (--lr_scale_with_workers)" in line for line in job.lines(0))
    expected = read_json(runs["one"], "dev_nbest_predictions.json")
    worst = assert_same_nbest(expected, read_json(again, "dev_nbest_predictions.json"), 1e-6)
    print("\n[measured] same checkpoint, 1 vs 2 ranks: max |n-best probability difference| %.2g" % worst)
    assert read_json(again, "predictions.json") == read_json(runs["one"], "predictions.json")


def rank_processes(marker):
    """{rank: pid} of the run_finetune ranks whose command line holds ``marker`` (read from /proc)."""
    from tf_mrc import distributed
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if not argv or b"python" not in os.path.basename(argv[0]) or marker.encode() not in b" ".join(argv):
            continue
        for name in distributed.LAUNCHER_RANK_VARIABLES:
            if env.get(name.encode()):
                found[int(env[name.encode()])] = int(pid)
                break
    return found


def test_fp16_allreduce_job_learns_and_a_killed_rank_ends_it_at_once(runs):
    """A job with --fp16_allreduce trains (rank 0's loss falls as the one-process run's did: the allreduce
    numerics themselves are checked exactly in test_distributed); then rank 1 is SIGKILLed in the middle of
    training: the job ends non-zero, naming rank 1, and rank 0's process is gone too (nobody is left waiting
    in an allreduce for a dead peer)."""
    out = os.path.join(runs["folder"], "killed")
    args = finetune_args(runs["data"], out, "--do_train", "--fp16_allreduce", "--max_train_steps=100000",
                         "--warmup_proportion=0", "--log_every=5")
    command = [horovodrun(), "-np", "2", "-H", "localhost:2", sys.executable,
               os.path.join(ROOT, "run_finetune.py")] + args
    env = horovod_job_env(TMPDIR=job_tmpdir(), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    job = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    lines, losses, trained = [], {}, threading.Event()

    def read():
        for raw in job.stdout:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            progress = re.search(r"\[train\] step (\d+)/100000  loss ([\d.]+)", line)
            if progress:
                losses[int(progress.group(1))] = float(progress.group(2))
                if int(progress.group(1)) >= STEPS:
                    trained.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert trained.wait(HANG_GUARD_SECONDS), "training never got far:\n" + "".join(lines)[-3000:]
        ranks = rank_processes(out)
        assert sorted(ranks) == [0, 1], ranks
        killed_at = time.time()
        os.kill(ranks[1], signal.SIGKILL)
        code = job.wait(timeout=HANG_GUARD_SECONDS)
        exited_at = time.time()
    except (subprocess.TimeoutExpired, AssertionError):
        os.killpg(job.pid, signal.SIGKILL)
        raise
    reader.join(10)
    output = "".join(lines)
    print("\n[measured] fp16 allreduce, rank 0's loss by step: %s" % sorted(losses.items()))
    print("[measured] rank 1 SIGKILLed during training -> horovodrun exited (%d) in %.2f s"
          % (code, exited_at - killed_at))
    # The one-process fp32 run went from 1.95 at step 10 to 0.48 at step 30 on the same data.
    assert losses[STEPS] < 0.5 * losses[5], losses
    assert code != 0, output[-3000:]
    # gloo: "Process 1 exit with status code 137" (128 + SIGKILL, through the rank's shell) /
    # mpirun: "process rank 1 with PID ... exited on signal 9".
    assert re.search(r"Process 1 exit with status code 137|rank 1 with PID \d+ .*exited on signal 9", output), \
        output[-3000:]
    assert not rank_processes(out), "ranks still running after the job ended"


class LocalRankReads(ast.NodeVisitor):
    """The functions (by name) in which ``local_rank`` is read, as ``x.local_rank`` or a bare name."""

    def __init__(self):
        self.scopes, self.readers = ["<module>"], set()

    def visit_FunctionDef(self, node):
        self.scopes.append(node.name)
        self.generic_visit(node)
        self.scopes.pop()

    def _read(self, node, name):
        if name == "local_rank" and isinstance(node.ctx, ast.Load):
            self.readers.add(self.scopes[-1])
        self.generic_visit(node)

    def visit_Attribute(self, node):
        self._read(node, node.attr)

    def visit_Name(self, node):
        self._read(node, node.id)


def test_local_rank_only_picks_the_device():
    """local_rank is the index on one host: using it for sharding or for who writes breaks multi-host jobs.
    Outside tf_mrc.distributed no code reads it; inside, only Horovod.__init__ (from hvd) and session_config."""
    sources = [os.path.join(ROOT, "run_finetune.py")]
    for folder in ("tf_mrc", "export", "serving_demo", "bench"):
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            sources += [os.path.join(base, name) for name in files if name.endswith(".py")]
    uses = set()
    for path in sources:
        with open(path, encoding="utf-8") as f:
            visitor = LocalRankReads()
            visitor.visit(ast.parse(f.read(), path))
        uses |= {(os.path.relpath(path, ROOT), scope) for scope in visitor.readers}
    assert uses == {("tf_mrc/distributed.py", "__init__"), ("tf_mrc/distributed.py", "session_config")}, uses
