"""One fine-tuning experiment: resolve files, model and hyperparameters, then train / evaluate / predict.

``run_finetune.py`` turns flags into a RunSpec (tf_mrc.options); tests and tools build one directly. Every task,
encoder and process count goes through the same ``run``, which validates the spec before any work.
"""
import dataclasses
import glob
import json
import math
import os
import shutil
import tempfile
from tf_mrc import compat, distributed, options, outputs, presets, pretrained, restart
from tf_mrc.ops import native
from tf_mrc.errors import UserError
from tf_mrc.modeling.config import config_from_json
from tf_mrc.options import RunSpec
from tf_mrc.tasks import FeatureSettings, get_task
from tf_mrc.modeling.layouts import LAYOUTS, descriptor
from tf_mrc.tokenization import load_tokenizer

RESOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources")


def embedded_default(output_dir="runs/embedded_default"):
    """The job ``python run_finetune.py`` runs with no arguments: the tiny encoder on the shipped passages."""
    tiny = os.path.join(RESOURCES, "tiny")
    passages = os.path.join(tiny, "passages.json")
    return RunSpec(task="cmrc2018", model="tiny", output_dir=output_dir, train_file=passages, dev_file=passages,
                   vocab_file=os.path.join(tiny, "vocab.txt"), do_train=True, do_eval=True, do_predict=True,
                   max_seq_length=128, doc_stride=32, max_query_length=32, log_every=20,
                   eval_every_epochs=15.0)  # one dev evaluation half-way through its 30 epochs, then the last


def _resolve(spec, explicit, role, task):
    """An explicit file, else the task's conventional name inside --data_dir; checked to exist."""
    path = explicit
    if path is None and spec.data_dir:
        path = os.path.join(spec.data_dir, task.default_files[role])
    if path is None:
        raise UserError("no %s file: pass --%s_file or --data_dir" % (role, role))
    if not os.path.isfile(path):
        raise UserError("%s file not found: %s" % (role, path))
    return path


def resolve_model(spec, log=print):
    """(ModelConfig, tokenizer, default max_seq_length) from the preset, --config_file and the vocabulary."""
    preset = presets.model_preset(spec.model)
    config = preset.config
    if spec.config_file:
        config = config_from_json(spec.config_file, layout=preset.config.layout, base=preset.config)
        presets.check_config_matches_preset(preset, config, spec.config_file)
    tokenizer = load_tokenizer(config.layout, spec.vocab_file, spec.spm_model, spec.lower_case)
    if config.vocab_size == 0:  # the tiny presets take their vocabulary size from the tokenizer
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size)
    if tokenizer.vocab_size != config.vocab_size:
        raise UserError("vocabulary %s has %d entries but the model expects vocab_size %d (wrong vocab for "
                        "this checkpoint/config?)" % (getattr(spec, descriptor(config).vocabulary_flag),
                                                       tokenizer.vocab_size, config.vocab_size))
    if spec.init_checkpoint:
        _check_checkpoint_vocab(spec.init_checkpoint, config)
    return config, tokenizer, preset.max_seq_length


# the word embeddings of every layout
WORD_EMBEDDINGS = tuple(sorted({layout.word_embeddings for layout in LAYOUTS.values()}))


def _check_checkpoint_vocab(init_checkpoint, config):
    from tf_mrc.compat import tf
    from tf_mrc.modeling.checkpoint import verify_readable
    verify_readable(init_checkpoint)
    shapes = dict(tf.train.list_variables(init_checkpoint))
    embeddings = descriptor(config).word_embeddings
    if embeddings not in shapes:   # before anything is written (tf_mrc.modeling.checkpoint checks every variable)
        raise UserError("--init_checkpoint %s holds no %s: not a checkpoint of a %s encoder (it holds e.g. %s)"
                        % (init_checkpoint, embeddings, config.layout, ", ".join(sorted(shapes)[:2]) or "nothing"))
    for name in WORD_EMBEDDINGS:
        if name in shapes and shapes[name][0] != config.vocab_size:
            raise UserError("--init_checkpoint %s has %d word embeddings but the vocabulary/config has %d"
                            % (init_checkpoint, shapes[name][0], config.vocab_size))


@dataclasses.dataclass
class TrainingPlan:
    """One training run's numbers, resolved from the hyperparameters, the feature count and the worker count.
    ``global_batch`` (--train_batch_size) is what the published tables mean by batch: one optimizer step
    averages the gradients of ``micro_batch`` features on each of ``workers`` ranks over ``grad_accum_steps``
    micro-batches."""
    learning_rate: float = 3e-5         # peak rate (x workers with --lr_scale_with_workers)
    num_train_steps: int = 1            # optimizer steps
    warmup_steps: int = 0
    global_batch: int = 1
    micro_batch: int = 1
    workers: int = 1
    grad_accum_steps: int = 1
    weight_decay: float = 0.01
    num_features: int = 0
    eval_steps: tuple = ()              # optimizer steps before the last at which the dev set is scored

    @property
    def steps_per_epoch(self):
        return self.num_features / float(self.global_batch)

    def consumed(self, step):
        """Training features one rank has read when ``step`` optimizer steps are done."""
        return step * self.grad_accum_steps * self.micro_batch


def plan_training(spec, hparams, num_features, workers, data_file="the training file"):
    """The TrainingPlan for ``num_features`` training features on ``workers`` ranks; a global batch that does not
    split evenly into workers x accumulation micro-batches is a user error naming counts that would work, and so
    is a rank left without features (each rank trains on its own share)."""
    global_batch, accumulation = hparams["train_batch_size"], hparams["grad_accum_steps"]
    if global_batch % (workers * accumulation):
        raise UserError(_batch_split_error(global_batch, workers, accumulation))
    if num_features < workers:
        raise UserError("%s has %d training feature(s), fewer than the %d workers: each worker trains on its own "
                        "share, so run at most %d" % (data_file, num_features, workers, num_features))
    num_train_steps = spec.max_train_steps or max(
        1, int(math.ceil(num_features * hparams["num_train_epochs"] / float(global_batch))))
    plan = TrainingPlan(learning_rate=hparams["learning_rate"] * (workers if spec.lr_scale_with_workers else 1),
                        num_train_steps=num_train_steps,
                        warmup_steps=int(num_train_steps * hparams["warmup_proportion"]),
                        global_batch=global_batch, micro_batch=global_batch // (workers * accumulation),
                        workers=workers, grad_accum_steps=accumulation, weight_decay=hparams["weight_decay"],
                        num_features=num_features)
    if spec.do_eval and spec.eval_every_epochs > 0:
        interval = spec.eval_every_epochs * plan.steps_per_epoch
        points = {int(round(k * interval)) for k in range(1, int(num_train_steps / interval) + 1)}
        plan.eval_steps = tuple(sorted(step for step in points if 0 < step < num_train_steps))
    return plan


def _batch_split_error(global_batch, workers, accumulation):
    divisors = [d for d in range(1, global_batch + 1) if global_batch % d == 0]

    def choices(values):
        return "{%s}" % ", ".join(map(str, values)) if values else "none"

    return ("--train_batch_size=%d (the global batch) does not split into %d workers x %d accumulated "
            "micro-batches: --grad_accum_steps that work with %d workers: %s; worker counts that work with "
            "--grad_accum_steps=%d: %s" % (
                global_batch, workers, accumulation, workers,
                choices([d for d in divisors if global_batch % (workers * d) == 0]), accumulation,
                choices([d for d in divisors if global_batch % (d * accumulation) == 0])))


@dataclasses.dataclass
class _Run:
    """What every seed of a run shares: the options, the resolved model and features, the process layout."""
    spec: RunSpec
    task: object
    config: object
    tokenizer: object
    settings: FeatureSettings
    hparams: dict
    files: dict
    dist: object
    log: object
    caches: dict = dataclasses.field(default_factory=dict)

    def cache(self, role):
        from tf_mrc.data import FeatureCache
        if role not in self.caches:
            cache_dir = self.spec.cache_dir or os.path.join(self.spec.output_dir, "cache")
            self.caches[role] = FeatureCache(cache_dir, self.task, self.files[role], self.tokenizer, self.settings,
                                             role == "train", self.dist, log=self.log,
                                             workers=self.spec.preprocess_workers)
            if role == "dev":
                self.task.check_gold(self.files[role], self.caches[role].examples)
        return self.caches[role]


def run(spec, log=print, dist=None):
    """Run ``spec`` for every seed; returns the per-seed metric dicts (rank 0) and writes results.md.
    ``dist``: the process layout (default: ``distributed.detect()``)."""
    if dist is None:
        dist = distributed.detect()
    options.validate(spec)
    spec = pretrained.resolve_init_checkpoint(spec, dist, log)
    task = get_task(spec.task, spec.task_options)
    config, tokenizer, preset_max_len = resolve_model(spec, log)
    hparams = presets.hyperparameters(spec.model, spec.task)
    for key in hparams:
        if getattr(spec, key) is not None:
            hparams[key] = getattr(spec, key)
    max_len = spec.max_seq_length or min(preset_max_len, task.default_max_seq_length)
    settings = FeatureSettings(max_len, spec.doc_stride, spec.max_query_length, spec.max_answer_length,
                               spec.n_best_size)
    options.validate_for_model(spec, task, config, tokenizer, settings)
    files = {}
    if spec.do_train:
        files["train"] = _resolve(spec, spec.train_file, "train", task)
    if spec.do_eval:
        files["dev"] = _resolve(spec, spec.dev_file, "dev", task)
    if spec.do_predict:
        files["predict"] = _resolve(spec, spec.predict_file or spec.dev_file, "dev" if not spec.predict_file
                                    else "predict", task)
    if not files:
        raise UserError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    # Rank 0 builds the native kernels (cached per machine) while the other ranks wait, so a host's ranks do not
    # all compile at once.
    kernels_form = dist.broadcast_object(native.status() if dist.is_chief and spec.kernels != "reference" else None)
    if dist.is_chief:
        record = _run_record(spec, config, settings)
        restart.check_output_dir(spec, record)
        log("[run] task=%s model=%s layout=%s max_seq_length=%d workers=%d kernels=%s precision=%s hparams=%s%s" % (
            spec.task, spec.model, config.layout, max_len, dist.size, spec.kernels, spec.precision,
            json.dumps(hparams), " eval_every_epochs=%g" % spec.eval_every_epochs if spec.do_train and spec.do_eval
            else ""))
        log("[run] CPU kernels: %s" % compat.cpu_kernels())
        if kernels_form:
            log("[run] fused kernels: %s" % kernels_form)
        outputs.write_json(os.path.join(spec.output_dir, restart.RUN_CONFIG), record)
        if dist.size > 1:
            scaling = ("x %d workers (--lr_scale_with_workers)" % dist.size if spec.lr_scale_with_workers else
                       "(not scaled; --lr_scale_with_workers would multiply it by %d)" % dist.size)
            log("[run] %d Horovod workers; learning rate %g %s" % (dist.size, hparams["learning_rate"], scaling))
    shared = _Run(spec, task, config, tokenizer, settings, hparams, files, dist, log)

    # Rank 0 works, and alone writes, in the output directory. Another rank's Estimator needs a directory too
    # but must not write beside rank 0's checkpoints: it gets a private temporary one, removed at the end, also
    # when this rank fails; it learns from rank 0 which checkpoint to predict from.
    private_dir = None if dist.is_chief else tempfile.mkdtemp(prefix="tf_mrc_rank%d_" % dist.rank)
    results = []
    try:
        for seed_index in range(spec.seeds):
            run_dir = spec.output_dir if spec.seeds == 1 else os.path.join(spec.output_dir, "seed_%d" % seed_index)
            if not dist.is_chief:
                run_dir = os.path.join(private_dir, "seed_%d" % seed_index)
            results.append(_run_one(shared, run_dir, spec.seed + seed_index))
    finally:
        if private_dir:
            shutil.rmtree(private_dir, ignore_errors=True)
    if spec.seeds > 1 and dist.is_chief and spec.do_eval:
        _write_seed_summary(spec, task, results, log)
    return results


def _run_record(spec, config, settings):
    """OUT/run_config.json: what a later export needs to rebuild the model and its features without flags."""
    return {"task": spec.task, "task_options": spec.task_options, "model": spec.model,
            "model_config": config.to_dict(), "feature_settings": dataclasses.asdict(settings),
            "vocab_file": os.path.abspath(spec.vocab_file) if spec.vocab_file else None,
            "spm_model": os.path.abspath(spec.spm_model) if spec.spm_model else None,
            "lower_case": spec.lower_case, "kernels": spec.kernels, "seeds": spec.seeds}


def _run_one(run, run_dir, seed):
    """Train (scoring the dev set at the plan's evaluation steps and keeping the best checkpoint), then score
    the last checkpoint on the dev file and predict with the best one (the last without evaluations during
    training). Returns the final dev metrics (rank 0), with the best evaluation during training under "best"."""
    from tf_mrc.estimator import make_estimator, model_fn_builder
    spec, dist, log = run.spec, run.dist, run.log
    plan = TrainingPlan(learning_rate=run.hparams["learning_rate"], grad_accum_steps=run.hparams["grad_accum_steps"])
    if spec.do_train:
        plan = plan_training(spec, run.hparams, run.cache("train").num_features, dist.size, run.files["train"])
        if dist.is_chief:
            log("[train] %d features, global batch %d = micro-batch %d x %d workers x %d accumulated, %d steps "
                "(%.2f per epoch), %d warmup, lr %g%s, dev evaluation at steps %s" % (
                    plan.num_features, plan.global_batch, plan.micro_batch, plan.workers, plan.grad_accum_steps,
                    plan.num_train_steps, plan.steps_per_epoch, plan.warmup_steps, plan.learning_rate,
                    " (scaled by workers)" if spec.lr_scale_with_workers else "",
                    list(plan.eval_steps) + [plan.num_train_steps] if spec.do_eval else "none"))
    model_fn = model_fn_builder(run.task, run.config, spec, plan, dist, log)
    estimator = make_estimator(model_fn, run_dir, dist, seed=seed, save_checkpoints_steps=spec.save_checkpoints_steps,
                               keep_checkpoint_max=spec.keep_checkpoint_max, xla=spec.xla)
    best = BestCheckpoint(run_dir, run.task.metric_names[0]) if plan.eval_steps and dist.is_chief else None
    if spec.do_train:
        _train(run, estimator, plan, run_dir, seed, best)
        dist.barrier("after-train")
    metrics = {}
    if spec.do_eval or spec.do_predict:
        # Every rank predicts from the checkpoint rank 0 names (the other ranks' model_dirs hold none).
        checkpoint = dist.broadcast_object(_latest_checkpoint(run_dir) if dist.is_chief else None)
        checkpoint = checkpoint or spec.init_checkpoint
        if checkpoint is None:
            raise UserError("no trained checkpoint in %s and no --init_checkpoint to evaluate" % spec.output_dir)
        predicted = {}
        if spec.do_eval:
            metrics = _final_evaluation(run, estimator, plan, run_dir, best, checkpoint, predicted)
        if spec.do_predict:
            if spec.do_train and plan.eval_steps:   # as the reference: predictions come from the best dev model
                checkpoint = dist.broadcast_object(best.checkpoint() if dist.is_chief else None)
                predicted = {}
            predicted_outputs = _predict_once(run, estimator, "predict", checkpoint, predicted)
            if dist.is_chief:
                data = run.cache("predict")
                predictions, nbest = run.task.postprocess(data.examples, data.sidecar, predicted_outputs,
                                                          data.settings)
                run.task.write_predictions(run_dir, "", predictions, nbest)
                log("[predict] %d answers from %s -> %s" % (len(predictions), checkpoint,
                                                            os.path.join(run_dir, "predictions.json")))
    dist.barrier("after-predict")
    return metrics


def _train(run, estimator, plan, run_dir, seed, best):
    """Train to plan.num_train_steps in segments that end at the dev evaluation steps, scoring the dev set after
    each. Rank 0 decides from its run directory where training resumes (its last checkpoint's step, the
    evaluations best.json records) for every rank, so all ranks run the same segments and collectives; each
    segment continues the feature order where the last stopped."""
    spec, dist, log = run.spec, run.dist, run.log
    _check_resumable(run_dir, spec, plan)
    step, evaluated = dist.broadcast_object(
        (_trained_step(run_dir), best.evaluated_steps() if best else []) if dist.is_chief else None)
    if step >= plan.num_train_steps:
        if dist.is_chief:
            log("[train] %s already holds step %d of %d: training skipped" % (run_dir, step, plan.num_train_steps))
        return
    if step and dist.is_chief:
        log("[train] resuming at step %d: each rank skips the %d features it trained on" % (step, plan.consumed(step)))
    for stop in [point for point in plan.eval_steps if point >= step and point not in evaluated] + \
            [plan.num_train_steps]:
        if step < stop:
            input_fn = run.cache("train").input_fn_builder(plan.micro_batch, dist, seed, plan.consumed(step))
            try:
                estimator.train(input_fn, max_steps=stop)
            except compat.tf.train.NanLossDuringTrainingError:   # the Estimator's NaN-loss check
                raise UserError(_diverged_message(run_dir, plan, step, stop))
            step = stop
        if stop < plan.num_train_steps:
            checkpoint = dist.broadcast_object(_latest_checkpoint(run_dir) if dist.is_chief else None)
            scored = _score_dev(run, estimator, checkpoint, {})
            if dist.is_chief:
                metrics = scored[2]
                log("[eval] step %d (epoch %.2f): %s" % (step, step / plan.steps_per_epoch, json.dumps(metrics)))
                _write_dev_summaries(run_dir, step, metrics, run.task.metric_names)
                best.update(step, step / plan.steps_per_epoch, metrics, checkpoint, log)


def _diverged_message(run_dir, plan, step, stop):
    """The one line for a loss that became NaN (or inf) while training from ``step`` towards ``stop``."""
    last = _latest_checkpoint(run_dir)
    return ("training diverged: the loss became NaN between steps %d and %d (is the peak learning rate %g too "
            "high?); %s" % (step, stop, plan.learning_rate,
                            "the last checkpoint is %s" % last if last else "no checkpoint was written"))


def _final_evaluation(run, estimator, plan, run_dir, best, checkpoint, predicted):
    """Score the last checkpoint on the dev file; rank 0 writes the dev predictions and eval_results.json (after
    training: with the step and the best evaluation during training) and returns the metrics."""
    scored = _score_dev(run, estimator, checkpoint, predicted)
    if not run.dist.is_chief:
        return {}
    predictions, nbest, metrics = scored
    run.task.write_predictions(run_dir, "dev_", predictions, nbest)
    if run.spec.do_train:
        step = plan.num_train_steps
        _write_dev_summaries(run_dir, step, metrics, run.task.metric_names)
        if best is not None:
            best.update(step, step / plan.steps_per_epoch, metrics, checkpoint, run.log)
        metrics = dict(metrics, step=step, **({"best": best.record["best"]} if best is not None else {}))
    outputs.write_json(os.path.join(run_dir, "eval_results.json"), metrics)
    run.log("[eval] %s" % json.dumps(metrics))
    return metrics


def _predict_once(run, estimator, role, checkpoint, predicted):
    """_predict_gathered for ``role``'s features, once per feature file (dev and predict are often the same)."""
    data = run.cache(role)
    if data.index_path not in predicted:
        predicted[data.index_path] = _predict_gathered(estimator, data, run.spec.predict_batch_size, run.dist,
                                                        checkpoint)
    return predicted[data.index_path]


def _score_dev(run, estimator, checkpoint, predicted):
    """(predictions, nbest, metrics) of ``checkpoint`` on the dev file with the task's official metric (rank 0;
    every rank predicts its shard, the others get None)."""
    outputs = _predict_once(run, estimator, "dev", checkpoint, predicted)
    if not run.dist.is_chief:
        return None
    data = run.cache("dev")
    predictions, nbest = run.task.postprocess(data.examples, data.sidecar, outputs, data.settings)
    return predictions, nbest, run.task.evaluate(data.examples, predictions)


def _write_dev_summaries(run_dir, step, metrics, names):
    """TensorBoard scalars dev/<metric> in OUT/eval (a run of its own beside the training summaries)."""
    from tf_mrc.compat import tf
    with tf.Graph().as_default():
        writer = tf.summary.FileWriter(os.path.join(run_dir, "eval"))
        values = [tf.Summary.Value(tag="dev/" + name, simple_value=float(metrics[name])) for name in names]
        writer.add_summary(tf.Summary(value=values), step)
        writer.close()


class BestCheckpoint:
    """OUT/best/: the checkpoint that scored best on the dev set so far (by the task's headline metric)
    and best.json, which records it and every evaluation of the run, so a restart resumes the evaluation
    schedule and the best-so-far. Rank 0 alone keeps it. A new best is written into a temporary directory that
    then replaces best/ by renames: best/ always holds one complete checkpoint with its record."""
    RECORD = "best.json"

    def __init__(self, run_dir, metric):
        self.path = os.path.join(run_dir, "best")
        self._staging, self._previous = self.path + ".tmp", self.path + ".previous"
        if not os.path.isdir(self.path) and os.path.isdir(self._previous):  # stopped between the two renames
            os.rename(self._previous, self.path)
        for stale in (self._staging, self._previous):
            shutil.rmtree(stale, ignore_errors=True)
        record = os.path.join(self.path, self.RECORD)
        if os.path.isfile(record):
            with open(record, encoding="utf-8") as f:
                self.record = json.load(f)
        else:
            self.record = {"metric": metric, "best": None, "evaluations": []}

    def evaluated_steps(self):
        return [entry["step"] for entry in self.record["evaluations"]]

    def checkpoint(self):
        from tf_mrc.compat import tf
        return os.path.abspath(tf.train.latest_checkpoint(self.path))

    def update(self, step, epoch, metrics, checkpoint, log):
        """Record the evaluation of ``checkpoint`` (at ``step``); copy it to best/ if it beats the best so far."""
        metric = self.record["metric"]
        entry = {"step": step, "epoch": round(epoch, 4), "metrics": metrics}
        if step not in self.evaluated_steps():
            self.record["evaluations"].append(entry)
        best = self.record["best"]
        if best is not None and metrics[metric] <= best["metrics"][metric]:
            outputs.write_json(os.path.join(self.path, self.RECORD), self.record)
            return
        self.record["best"] = entry
        os.makedirs(self._staging)
        name = os.path.basename(checkpoint)
        for path in glob.glob(checkpoint + ".*"):
            _link_or_copy(path, os.path.join(self._staging, os.path.basename(path)))
        with open(os.path.join(self._staging, "checkpoint"), "w") as f:
            f.write('model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' % (name, name))
        outputs.write_json(os.path.join(self._staging, self.RECORD), self.record)
        if os.path.isdir(self.path):
            os.rename(self.path, self._previous)
        os.rename(self._staging, self.path)
        shutil.rmtree(self._previous, ignore_errors=True)
        log("[eval] new best %s %.3f at step %d -> %s" % (metric, metrics[metric], step, self.path))


def _link_or_copy(source, target):
    """A hard link where the filesystem allows it: checkpoint files are never rewritten in place (the Saver
    writes new files and deletes old ones), so best/ shares their bytes instead of copying gigabytes of weights
    and Adam slots at every new best."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


def _latest_checkpoint(run_dir):
    from tf_mrc.compat import tf
    latest = tf.train.latest_checkpoint(run_dir)
    return os.path.abspath(latest) if latest else None


def _trained_step(run_dir):
    """The global step of run_dir's last checkpoint (0 without one). Rank 0 reads it for every rank: an
    Estimator skips training when its own model_dir has reached max_steps, and a rank that skipped while
    another trained would leave that one waiting forever."""
    from tf_mrc.compat import tf
    latest = _latest_checkpoint(run_dir)
    return int(tf.train.load_variable(latest, "global_step")) if latest else 0


def _check_resumable(run_dir, spec, plan):
    """Training resumes from run_dir's last checkpoint, which must hold the state these flags add."""
    from tf_mrc.compat import tf
    checkpoint = tf.train.latest_checkpoint(run_dir)
    if checkpoint is None:
        return
    stored = {name for name, _ in tf.train.list_variables(checkpoint)}
    for wanted, state, flag in ((spec.precision == "fp16", "loss_scale", "--precision=fp16"),
                                (plan.grad_accum_steps > 1, "micro_step", "--grad_accum_steps > 1")):
        if wanted and state not in stored:
            raise UserError("%s was trained without %s: resume with its own flags, or start a new --output_dir "
                            "with --init_checkpoint=%s" % (checkpoint, flag, checkpoint))


def _predict_gathered(estimator, data, batch_size, dist, checkpoint):
    """Every rank predicts its own slice of the features: tf.data's shard gives rank r the features r, r + size,
    r + 2 size, ..., so feature i is item i // size of rank i % size's slice (slices differ in length by at
    most one). Rank 0 gets every output in feature order; the other ranks, which write nothing, get None."""
    from tf_mrc.compat import tf
    from tf_mrc.errors import first_line
    from tf_mrc.estimator import predict_outputs
    try:
        mine = predict_outputs(estimator, data.input_fn_builder(batch_size, dist), checkpoint)
    except tf.errors.NotFoundError as err:   # e.g. a pre-trained --init_checkpoint without the task's head
        raise UserError("checkpoint %s lacks variables the model predicts with (no trained task head? train with "
                        "--do_train first): %s" % (checkpoint, first_line(err)))
    slices = dist.allgather_objects(mine)
    if not dist.is_chief:
        return None
    if sum(len(part) for part in slices) != data.num_features:
        raise RuntimeError("gathered %s predictions per rank for %d features"
                           % ([len(part) for part in slices], data.num_features))
    return [slices[i % dist.size][i // dist.size] for i in range(data.num_features)]


def _write_seed_summary(spec, task, results, log):
    """results.md and eval_results.json over seeds: mean (max) of each seed's best dev score during training
    (the published tables' convention), and of the final checkpoints'."""
    from tf_mrc import metrics
    best = [result["best"]["metrics"] if "best" in result else result for result in results]
    aggregated = metrics.aggregate_seeds(best, task.metric_names)
    final = metrics.aggregate_seeds(results, task.metric_names)
    outputs.write_text(os.path.join(spec.output_dir, "results.md"),
                       "Best dev score of each seed during training:\n\n" +
                       metrics.results_markdown(spec.task, spec.model, aggregated, task.metric_names) +
                       "\nLast checkpoint of each seed:\n\n" +
                       metrics.results_markdown(spec.task, spec.model, final, task.metric_names))
    outputs.write_json(os.path.join(spec.output_dir, "eval_results.json"),
                       {"seeds": results, "aggregate": aggregated, "aggregate_final": final})
    log("[seeds] best %s; final %s" % (json.dumps({k: v["mean"] for k, v in aggregated.items()}),
                                       json.dumps({k: v["mean"] for k, v in final.items()})))
