"""The training recipe: feature order, global batch, presets, evaluation during training and the best checkpoint."""
import copy
import itertools
import json
import os

import numpy as np
import pytest

from tf_mrc import distributed, experiment, presets
from tf_mrc.data import FeatureCache, ShardRecords, training_order
from tf_mrc.errors import UserError
from tf_mrc.tasks import FeatureSettings, get_task
from tf_mrc.tokenization import load_tokenizer

TINY = experiment.embedded_default()


def domain_sorted_cjrc(path, passages_per_domain=90):
    """A CJRC file sorted as the published ones are, civil passages first, then criminal: the shipped passages
    (their span questions) repeated under both domains."""
    with open(TINY.train_file, encoding="utf-8") as f:
        shipped = json.load(f)["data"]
    data = []
    for index in range(2 * passages_per_domain):
        paragraph = copy.deepcopy(shipped[index % len(shipped)]["paragraphs"][0])
        for qa in paragraph["qas"]:
            qa["id"], qa["is_impossible"] = "%s-%d" % (qa["id"], index), "false"
        paragraph["casename"] = "case %d" % index
        data.append({"domain": "civil" if index < passages_per_domain else "criminal", "paragraphs": [paragraph]})
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": "1.0", "data": data}, f, ensure_ascii=False)
    return path


@pytest.fixture(scope="module")
def sorted_cache(tmp_path_factory):
    """The domain-sorted file's training features (short windows: every question makes several)."""
    folder = tmp_path_factory.mktemp("order")
    data = domain_sorted_cjrc(str(folder / "cjrc_sorted.json"))
    task = get_task("cjrc")
    tokenizer = load_tokenizer("bert", TINY.vocab_file, None, None)
    cache = FeatureCache(str(folder / "cache"), task, data, tokenizer, FeatureSettings(48, 8, 16), True,
                         distributed.SingleProcess(), log=lambda line: None)
    return cache


def feature_keys(arrays):
    """Identity of a feature: its question and its window's tokens (unique per feature here)."""
    return [(int(index), ids.tobytes()) for index, ids in zip(arrays["example_index"], arrays["input_ids"])]


def file_order(cache):
    from tf_mrc.compat import tf
    with ShardRecords(cache.record_files, 0, 1) as shard:
        records = [tf.train.Example.FromString(record) for record in shard]
    arrays = {name: np.array([list(r.features.feature[name].int64_list.value) for r in records], dtype=np.int32)
              for name in ("example_index", "input_ids")}
    arrays["example_index"] = arrays["example_index"][:, 0]
    return feature_keys(arrays)


def trained_features(cache, count, micro_batch=16, seed=7, consumed=0):
    """The first ``count`` features the training input_fn delivers, as feature keys."""
    from tf_mrc.compat import tf
    with tf.Graph().as_default():
        batch = tf.data.make_one_shot_iterator(cache.input_fn_builder(
            micro_batch, distributed.SingleProcess(), seed, consumed)()).get_next()
        keys = []
        with tf.Session() as session:
            while len(keys) < count:
                keys += feature_keys(session.run(batch))
    return keys[:count]


def test_every_epoch_is_a_fresh_permutation_of_the_whole_domain_sorted_file(sorted_cache):
    files = file_order(sorted_cache)
    position = {key: index for index, key in enumerate(files)}
    n = len(files)
    assert n == sorted_cache.num_features and len(position) == n and n > 3000, n
    civil = np.array([sorted_cache.examples[index].domain == "civil" for index, _ in files])
    assert civil[:n // 3].all() and not civil[-n // 3:].any()     # the file is sorted: civil first
    trained = trained_features(sorted_cache, 2 * n)
    epochs = [np.array([position[key] for key in trained[e * n:(e + 1) * n]]) for e in range(2)]
    for order in epochs:
        assert sorted(order) == list(range(n))                     # every feature once per epoch
        correlation = np.corrcoef(np.arange(n), order)[0, 1]
        tenths = [civil[part].mean() for part in np.array_split(order, 10)]
        print("\n[measured] %d features: corr(file position, training order) %.4f, civil share per tenth %s "
              "(file %.3f)" % (n, correlation, ["%.2f" % share for share in tenths], civil.mean()))
        assert abs(correlation) < 0.05
        assert max(abs(share - civil.mean()) for share in tenths) <= 0.1
    assert not np.array_equal(epochs[0], epochs[1])                # a fresh permutation each epoch


def test_a_resumed_input_continues_the_same_order(sorted_cache):
    n = sorted_cache.num_features
    unbroken = trained_features(sorted_cache, n + 40)
    consumed = n - 24          # resumed 24 features before the end of the first epoch
    assert trained_features(sorted_cache, 64, consumed=consumed) == unbroken[consumed:consumed + 64]


def test_rank_shards_partition_the_set_and_each_rank_resumes_its_own_order():
    size, n = 3, 100
    epoch = {}
    for rank in range(size):
        shard = np.arange(rank, n, size)
        order = list(itertools.islice(training_order(len(shard), 11, rank), 3 * len(shard)))
        epoch[rank] = set(shard[order[:len(shard)]])
        assert sorted(order[len(shard):2 * len(shard)]) == list(range(len(shard)))
        for consumed in (5, len(shard), len(shard) + 7):
            assert list(itertools.islice(training_order(len(shard), 11, rank, consumed), 20)) == \
                order[consumed:consumed + 20]
    assert set.union(*epoch.values()) == set(range(n)) and sum(len(part) for part in epoch.values()) == n


# ---------------------------------------------------------------------------------------------------------------
# --train_batch_size is the global batch
# ---------------------------------------------------------------------------------------------------------------

def test_global_batch_splits_into_workers_and_accumulation():
    spec = experiment.RunSpec()
    hparams = dict(presets.hyperparameters("roberta_wwm_ext_large", "cmrc2018"), grad_accum_steps=1)
    plans = {workers: experiment.plan_training(spec, hparams, 10000, workers) for workers in (1, 2, 4)}
    # the published setting (batch 12, 2 epochs) is the same run on any worker count: ceil(10000 x 2 / 12)
    assert {plan.num_train_steps for plan in plans.values()} == {1667}
    assert [plans[w].micro_batch for w in (1, 2, 4)] == [12, 6, 3]
    c3 = experiment.plan_training(spec, presets.hyperparameters("roberta_wwm_ext_base", "c3"), 1000, 2)
    assert (c3.global_batch, c3.micro_batch, c3.grad_accum_steps, c3.num_train_steps) == (16, 2, 4, 500)
    assert c3.consumed(10) == 10 * 4 * 2


def test_a_batch_that_does_not_split_names_counts_that_would():
    hparams = dict(presets.hyperparameters("roberta_wwm_ext_large", "cmrc2018"), grad_accum_steps=2)
    with pytest.raises(UserError) as error:
        experiment.plan_training(experiment.RunSpec(), hparams, 100, 4)
    assert str(error.value) == ("--train_batch_size=12 (the global batch) does not split into 4 workers x 2 "
                                "accumulated micro-batches: --grad_accum_steps that work with 4 workers: {1, 3}; "
                                "worker counts that work with --grad_accum_steps=2: {1, 2, 3, 6}")


# ---------------------------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------------------------

# The reference settings as published (../shared/REFERENCE_TABLES.md), transcribed by hand:
# (epochs, global batch, lr, warmup, grad_accum_steps, weight decay).
PUBLISHED = {
    ("roberta_wwm_ext_base", "cmrc2018"): (2, 32, 3e-5, 0.1, 1, 0.01),
    ("roberta_wwm_ext_large", "cmrc2018"): (2, 12, 2e-5, 0.1, 1, 0.01),
    ("roberta_wwm_ext_large", "drcd"): (2, 32, 2.5e-5, 0.1, 1, 0.01),
    ("brightmart_albert_large", "cmrc2018"): (3, 32, 2e-5, 0.05, 1, 0.01),
    ("brightmart_albert_large", "drcd"): (3, 32, 2e-5, 0.05, 1, 0.01),
    ("brightmart_albert_large", "cjrc"): (2, 32, 3e-5, 0.1, 1, 0.01),
    ("brightmart_albert_xlarge", "cmrc2018"): (3, 32, 2e-5, 0.1, 1, 0.01),
    ("brightmart_albert_xlarge", "drcd"): (3, 32, 2.5e-5, 0.06, 1, 0.01),
    ("brightmart_albert_xlarge", "cjrc"): (2, 32, 2.5e-5, 0.05, 1, 0.01),
    ("roberta_wwm_ext_large", "chid"): (3, 32, 2e-5, 0.06, 1, 0.01),
    ("google_albert_xxlarge", "chid"): (3, 32, 2e-5, 0.06, 1, 0.01),
    ("roberta_wwm_ext_base", "c3"): (8, 16, 2e-5, 0.05, 4, 0.01),
    ("brightmart_roberta_large", "c3"): (8, 16, 2e-5, 0.05, 4, 0.01),
}


@pytest.mark.parametrize("model, task", sorted(PUBLISHED))
def test_presets_carry_the_reference_settings(model, task):
    values = presets.hyperparameters(model, task)
    assert tuple(values[name] for name in ("num_train_epochs", "train_batch_size", "learning_rate",
                                           "warmup_proportion", "grad_accum_steps", "weight_decay")) == \
        PUBLISHED[(model, task)]


def test_chid_and_c3_presets_show_in_the_run_log(tmp_path):
    """The [run] line shows a task's preset (and CHID's 64-token window) before any work starts; here the run
    then stops at the training file, which is not in the task's format."""
    vocab = tmp_path / "vocab.txt"   # the tiny vocabulary padded to the base models' 21,128 entries
    tokens = open(TINY.vocab_file, encoding="utf-8").read().split()
    vocab.write_text("\n".join(tokens + ["[unused%d]" % i for i in range(21128 - len(tokens))]) + "\n",
                     encoding="utf-8")
    expected = {"chid": (64, '"num_train_epochs": 3.0, "train_batch_size": 32, "learning_rate": 2e-05, '
                             '"warmup_proportion": 0.06, "weight_decay": 0.01, "grad_accum_steps": 1'),
                "c3": (512, '"num_train_epochs": 8.0, "train_batch_size": 16, "learning_rate": 2e-05, '
                            '"warmup_proportion": 0.05, "weight_decay": 0.01, "grad_accum_steps": 4')}
    for task, (max_len, hparams) in expected.items():
        logged = []
        spec = experiment.RunSpec(task=task, model="roberta_wwm_ext_base", output_dir=str(tmp_path / task),
                                  vocab_file=str(vocab), train_file=TINY.train_file, do_train=True)
        with pytest.raises(UserError):
            experiment.run(spec, log=logged.append, dist=distributed.SingleProcess())
        assert "max_seq_length=%d " % max_len in logged[0] and hparams in logged[0], logged
    tiny = presets.hyperparameters("tiny", "c3")        # the test model keeps its own settings on every task
    assert (tiny["train_batch_size"], tiny["grad_accum_steps"]) == (8, 1)


# ---------------------------------------------------------------------------------------------------------------
# evaluation during training, the best checkpoint, resuming
# ---------------------------------------------------------------------------------------------------------------

def no_dropout_config(folder):
    path = os.path.join(folder, "no_dropout.json")
    with open(path, "w") as f:
        json.dump({"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128,
                   "max_position_embeddings": 128, "hidden_dropout_prob": 0.0,
                   "attention_probs_dropout_prob": 0.0}, f)
    return path


def tiny_run(folder, name, config, **overrides):
    """The embedded default without dropout: 29 features, 2 epochs of global batch 8 = 8 steps."""
    spec = experiment.embedded_default(os.path.join(folder, name))
    spec.config_file, spec.num_train_epochs, spec.do_predict, spec.log_every = config, 2.0, False, 1000
    spec.eval_every_epochs = 1.0
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


def weights(checkpoint):
    from tf_mrc.compat import tf
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "adam" not in name and name != "global_step"}


def max_difference(first, second):
    a, b = weights(first), weights(second)
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[name] - b[name]))) for name in a)


def event_scalars(folder):
    """{tag: {step: value}} of the TensorBoard event files directly in ``folder``."""
    from tf_mrc.compat import tf
    scalars = {}
    for name in os.listdir(folder):
        if name.startswith("events.out.tfevents"):
            for event in tf.train.summary_iterator(os.path.join(folder, name)):
                for value in event.summary.value:
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def evaluated_runs(tmp_path_factory):
    """One unbroken training run (no evaluation during it) and the same run evaluated every epoch."""
    folder = str(tmp_path_factory.mktemp("recipe_runs"))
    config = no_dropout_config(folder)
    unbroken = tiny_run(folder, "unbroken", config, eval_every_epochs=0.0)
    experiment.run(unbroken, log=lambda line: None)
    evaluated, logged = tiny_run(folder, "evaluated", config, do_predict=True), []
    results = experiment.run(evaluated, log=logged.append)
    return {"folder": folder, "config": config, "unbroken": unbroken.output_dir, "evaluated": evaluated.output_dir,
            "results": results, "logged": logged}


def test_evaluation_during_training_keeps_the_best_checkpoint(evaluated_runs):
    out = evaluated_runs["evaluated"]
    # 8 steps of 3.625 per epoch: every epoch is steps 3.6, 7.25 -> 4, 7, then the last, 8
    record = read(os.path.join(out, "best", "best.json"))
    assert [entry["step"] for entry in record["evaluations"]] == [4, 7, 8]
    best = max(record["evaluations"], key=lambda entry: entry["metrics"]["f1"])
    assert record["best"] == best and record["metric"] == "f1"
    from tf_mrc.compat import tf
    kept = tf.train.latest_checkpoint(os.path.join(out, "best"))
    assert kept.endswith("model.ckpt-%d" % best["step"])
    assert max_difference(kept, os.path.join(out, "model.ckpt-%d" % best["step"])) == 0.0   # a true copy
    assert any(line.startswith("[predict] 29 answers from %s " % os.path.abspath(kept))
               for line in evaluated_runs["logged"])    # --do_predict answers with the best checkpoint
    final = read(os.path.join(out, "eval_results.json"))
    assert final == evaluated_runs["results"][0] and final["step"] == 8 and final["best"] == best
    assert final["f1"] == record["evaluations"][-1]["metrics"]["f1"]
    # TensorBoard: the dev metrics at every evaluation; loss and learning rate from training
    dev = event_scalars(os.path.join(out, "eval"))
    assert sorted(dev["dev/f1"]) == [4, 7, 8]
    assert abs(dev["dev/em"][7] - record["evaluations"][1]["metrics"]["em"]) < 1e-4
    assert {"loss", "learning_rate"} <= set(event_scalars(out))
    assert not [name for name in os.listdir(out) if name.startswith("best.")]   # no staging left behind


def test_segments_and_a_restart_continue_the_order_of_one_unbroken_run(evaluated_runs):
    """Training stopped for evaluations, and a run restarted from a middle checkpoint, feed the features in the
    unbroken run's order: without dropout they reach its weights. The restart resumes the evaluation record."""
    from tf_mrc.compat import tf
    unbroken, out = evaluated_runs["unbroken"], evaluated_runs["evaluated"]
    difference = max_difference(os.path.join(unbroken, "model.ckpt-8"), os.path.join(out, "model.ckpt-8"))
    print("\n[measured] unbroken vs 3 segments: max |weight difference| %.2g" % difference)
    assert difference <= 1e-6
    # A restart from step 4, whose record holds the evaluation at step 4.
    restarted = os.path.join(evaluated_runs["folder"], "restarted")
    os.makedirs(os.path.join(restarted, "best"))
    for name in os.listdir(out):
        if name.startswith("model.ckpt-4."):
            tf.gfile.Copy(os.path.join(out, name), os.path.join(restarted, name))
    with open(os.path.join(restarted, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model.ckpt-4"\n')
    record = read(os.path.join(out, "best", "best.json"))
    early = [entry for entry in record["evaluations"] if entry["step"] <= 4]
    with open(os.path.join(restarted, "best", "best.json"), "w") as f:
        json.dump(dict(record, evaluations=early, best=max(early, key=lambda e: e["metrics"]["f1"])), f)
    logged = []
    experiment.run(tiny_run(evaluated_runs["folder"], "restarted", evaluated_runs["config"]), log=logged.append)
    assert any("resuming at step 4: each rank skips the 32 features" in line for line in logged), logged
    assert [line.split(":")[0] for line in logged if line.startswith("[eval] step")] == ["[eval] step 7 (epoch 1.93)"]
    difference = max_difference(os.path.join(unbroken, "model.ckpt-8"), os.path.join(restarted, "model.ckpt-8"))
    print("[measured] unbroken vs restarted at step 4: max |weight difference| %.2g" % difference)
    assert difference <= 1e-6
    resumed = read(os.path.join(restarted, "best", "best.json"))
    assert [e["step"] for e in resumed["evaluations"]] == [4, 7, 8]
    assert resumed["best"]["step"] == record["best"]["step"]


def test_starting_a_finished_run_again_keeps_its_record(evaluated_runs):
    out = evaluated_runs["evaluated"]
    before = read(os.path.join(out, "best", "best.json"))
    logged = []
    experiment.run(tiny_run(evaluated_runs["folder"], "evaluated", evaluated_runs["config"]), log=logged.append)
    assert any("already holds step 8 of 8: training skipped" in line for line in logged)
    assert read(os.path.join(out, "best", "best.json")) == before


def test_export_takes_the_best_checkpoint_by_default(evaluated_runs):
    from export.to_pb import spec_from_run
    out = evaluated_runs["evaluated"]
    best = read(os.path.join(out, "best", "best.json"))["best"]["step"]
    assert spec_from_run(out, log=lambda line: None).checkpoint.endswith(
        os.path.join("best", "model.ckpt-%d" % best))
    assert spec_from_run(out, last=True, log=lambda line: None).checkpoint.endswith(
        os.path.join("evaluated", "model.ckpt-8"))


def test_fewer_features_than_workers_is_one_line_naming_the_file():
    """A rank with an empty share would fail inside the input pipeline (a traceback on that rank, found with one
    training question on -np 2); the plan refuses it first."""
    hparams = presets.hyperparameters("roberta_wwm_ext_base", "cmrc2018")
    experiment.plan_training(experiment.RunSpec(), hparams, 4, 4, "train.json")  # one feature each: fine
    with pytest.raises(UserError) as error:
        experiment.plan_training(experiment.RunSpec(), hparams, 1, 2, "train.json")
    assert str(error.value) == ("train.json has 1 training feature(s), fewer than the 2 workers: each worker trains "
                                "on its own share, so run at most 1")
