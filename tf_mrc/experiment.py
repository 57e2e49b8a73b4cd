"""One fine-tuning experiment: resolve files, model and hyperparameters, then train / evaluate / predict.

``run_finetune.py`` turns flags into a RunSpec; tests and tools build one directly. Every task, encoder and
process count goes through the same ``run``.
"""
import dataclasses
import json
import math
import os
import shutil
import tempfile
from typing import Optional

from tf_mrc import compat, distributed, outputs, presets, pretrained, restart
from tf_mrc.errors import UserError
from tf_mrc.modeling.config import config_from_json
from tf_mrc.tasks import FeatureSettings, get_task
from tf_mrc.modeling.layouts import LAYOUTS, check_max_seq_length, check_recompute, descriptor
from tf_mrc.tokenization import load_tokenizer

RESOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources")


@dataclasses.dataclass
class RunSpec:
    task: str = "cmrc2018"
    model: str = "roberta_wwm_ext_base"
    output_dir: str = "runs/out"
    data_dir: Optional[str] = None
    train_file: Optional[str] = None
    dev_file: Optional[str] = None
    predict_file: Optional[str] = None
    init_checkpoint: Optional[str] = None
    vocab_file: Optional[str] = None
    spm_model: Optional[str] = None
    config_file: Optional[str] = None
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    seeds: int = 1
    seed: int = 12345
    lower_case: Optional[bool] = None     # None: the layout's convention (see load_tokenizer)
    max_seq_length: Optional[int] = None
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 50
    n_best_size: int = 20
    num_train_epochs: Optional[float] = None
    train_batch_size: Optional[int] = None
    predict_batch_size: int = 32
    learning_rate: Optional[float] = None
    warmup_proportion: Optional[float] = None
    max_train_steps: Optional[int] = None
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 3
    log_every: int = 50
    kernels: str = "fused"
    cache_dir: Optional[str] = None
    lr_scale_with_workers: bool = False
    fp16_allreduce: bool = False
    precision: str = "fp32"               # fp32 | fp16 | bf16 compute; variables stay fp32 (see tf_mrc.training)
    loss_scale_growth_interval: int = 2000  # fp16: clean steps before the loss scale doubles
    grad_accum_steps: int = 1             # micro-batches per optimizer step (effective batch x K)
    recompute: bool = False               # gradient checkpointing per transformer block
    attention_dropout_placement: str = "probs"  # probs (BERT) | context (see tf_mrc.ops.attention_dropout)
    xla: bool = False                     # XLA JIT auto-clustering, best effort
    task_options: dict = dataclasses.field(default_factory=dict)


def embedded_default(output_dir="runs/embedded_default"):
    """The job ``python run_finetune.py`` runs with no arguments: the tiny encoder on the shipped passages."""
    tiny = os.path.join(RESOURCES, "tiny")
    passages = os.path.join(tiny, "passages.json")
    return RunSpec(task="cmrc2018", model="tiny", output_dir=output_dir, train_file=passages, dev_file=passages,
                   vocab_file=os.path.join(tiny, "vocab.txt"), do_train=True, do_eval=True, do_predict=True,
                   max_seq_length=128, doc_stride=32, max_query_length=32, log_every=20)


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


def _check_training_options(spec, config):
    from tf_mrc import ops
    from tf_mrc.compat import IS_TF1
    from tf_mrc.training import PRECISIONS
    if spec.precision not in PRECISIONS:
        raise UserError("--precision must be one of %s, got %r" % ("|".join(PRECISIONS), spec.precision))
    if spec.precision == "bf16" and IS_TF1:
        raise UserError("--precision=bf16 needs TF 2 (TF 1.13 has no bfloat16 batch-matmul kernel); use fp16")
    if spec.grad_accum_steps < 1:
        raise UserError("--grad_accum_steps must be >= 1, got %d" % spec.grad_accum_steps)
    if spec.loss_scale_growth_interval < 1:
        raise UserError("--loss_scale_growth_interval must be >= 1, got %d" % spec.loss_scale_growth_interval)
    if spec.attention_dropout_placement not in ops.ATTENTION_DROPOUT_SITES:
        raise UserError("--attention_dropout_placement must be one of %s, got %r"
                        % ("|".join(ops.ATTENTION_DROPOUT_SITES), spec.attention_dropout_placement))
    if spec.recompute:
        check_recompute(config)


def run(spec, log=print, dist=None):
    """Run ``spec`` for every seed; returns the per-seed metric dicts (rank 0) and writes results.md.
    ``dist``: the process layout (default: ``distributed.detect()``)."""
    if dist is None:
        dist = distributed.detect()
    spec = pretrained.resolve_init_checkpoint(spec, dist, log)
    task = get_task(spec.task, spec.task_options)
    config, tokenizer, preset_max_len = resolve_model(spec, log)
    _check_training_options(spec, config)
    hparams = presets.hyperparameters(spec.model, spec.task)
    for key in hparams:
        if getattr(spec, key) is not None:
            hparams[key] = getattr(spec, key)
    max_len = spec.max_seq_length or min(preset_max_len, task.default_max_seq_length)
    check_max_seq_length(config, max_len)
    settings = FeatureSettings(max_len, spec.doc_stride, spec.max_query_length, spec.max_answer_length,
                               spec.n_best_size)
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
    if dist.is_chief:
        record = _run_record(spec, config, settings)
        restart.check_output_dir(spec, record)
        log("[run] task=%s model=%s layout=%s max_seq_length=%d workers=%d kernels=%s precision=%s hparams=%s" % (
            spec.task, spec.model, config.layout, max_len, dist.size, spec.kernels, spec.precision,
            json.dumps(hparams)))
        log("[run] CPU kernels: %s" % compat.cpu_kernels())
        outputs.write_json(os.path.join(spec.output_dir, restart.RUN_CONFIG), record)
        if dist.size > 1:
            scaling = ("x %d workers (--lr_scale_with_workers)" % dist.size if spec.lr_scale_with_workers else
                       "(not scaled; --lr_scale_with_workers would multiply it by %d)" % dist.size)
            log("[run] %d Horovod workers; learning rate %g %s" % (dist.size, hparams["learning_rate"], scaling))
    cache_dir = spec.cache_dir or os.path.join(spec.output_dir, "cache")
    caches = {}

    def cache(role):
        from tf_mrc.data import FeatureCache
        if role not in caches:
            caches[role] = FeatureCache(cache_dir, task, files[role], tokenizer, settings, role == "train", dist,
                                        log=log)
            if role == "dev":
                task.check_gold(files[role], caches[role].examples)
        return caches[role]

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
            results.append(_run_one(spec, task, config, settings, hparams, cache, dist, run_dir,
                                    spec.seed + seed_index, log))
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


def _run_one(spec, task, config, settings, hparams, cache, dist, run_dir, seed, log):
    from tf_mrc.estimator import make_estimator, model_fn_builder
    num_train_steps, warmup = 1, 0
    learning_rate = hparams["learning_rate"] * (dist.size if spec.lr_scale_with_workers else 1)
    if spec.do_train:
        train = cache("train")
        # one step = one optimizer update over grad_accum_steps micro-batches on every worker
        global_batch = hparams["train_batch_size"] * dist.size * spec.grad_accum_steps
        num_train_steps = spec.max_train_steps or max(
            1, int(math.ceil(train.num_features * hparams["num_train_epochs"] / global_batch)))
        warmup = int(num_train_steps * hparams["warmup_proportion"])
        if dist.is_chief:
            log("[train] %d features, global batch %d (%d x %d workers x %d accumulated), %d steps, %d warmup, "
                "lr %g%s" % (train.num_features, global_batch, hparams["train_batch_size"], dist.size,
                             spec.grad_accum_steps, num_train_steps, warmup, learning_rate,
                             " (scaled by workers)" if spec.lr_scale_with_workers else ""))
    model_fn = model_fn_builder(task, config, kernels=spec.kernels, init_checkpoint=spec.init_checkpoint,
                                learning_rate=learning_rate, num_train_steps=num_train_steps,
                                num_warmup_steps=warmup, dist=dist, num_choices=getattr(task, "num_choices", None),
                                log=log, log_every=spec.log_every, fp16_allreduce=spec.fp16_allreduce,
                                precision=spec.precision, grad_accum_steps=spec.grad_accum_steps,
                                loss_scale_growth_interval=spec.loss_scale_growth_interval,
                                recompute=spec.recompute, attention_dropout_placement=spec.attention_dropout_placement)
    estimator = make_estimator(model_fn, run_dir, dist, seed=seed,
                               save_checkpoints_steps=spec.save_checkpoints_steps,
                               keep_checkpoint_max=spec.keep_checkpoint_max, xla=spec.xla)
    if spec.do_train:
        _check_resumable(run_dir, spec)
        if not _already_trained(run_dir, num_train_steps, dist, log):
            estimator.train(cache("train").input_fn_builder(hparams["train_batch_size"], dist, seed),
                            max_steps=num_train_steps)
        dist.barrier("after-train")
    checkpoint = None
    if spec.do_eval or spec.do_predict:
        # Every rank predicts from the checkpoint rank 0 names (the other ranks' model_dirs hold none).
        checkpoint = dist.broadcast_object(_latest_checkpoint(run_dir) if dist.is_chief else None)
        checkpoint = checkpoint or spec.init_checkpoint
        if checkpoint is None:
            raise UserError("no trained checkpoint in %s and no --init_checkpoint to evaluate" % spec.output_dir)
    metrics = {}
    predicted = {}
    for role in ("dev", "predict"):
        if (role == "dev" and not spec.do_eval) or (role == "predict" and not spec.do_predict):
            continue
        data = cache(role)
        key = data.record_path
        if key not in predicted:
            predicted[key] = _predict_gathered(estimator, data, spec.predict_batch_size, dist, checkpoint)
        if not dist.is_chief:
            continue
        predictions, nbest = task.postprocess(data.examples, data.sidecar, predicted[key], data.settings)
        if role == "dev":
            metrics = task.evaluate(data.examples, predictions)
            task.write_predictions(run_dir, "dev_", predictions, nbest)
            outputs.write_json(os.path.join(run_dir, "eval_results.json"), metrics)
            log("[eval] %s" % json.dumps(metrics))
        else:
            task.write_predictions(run_dir, "", predictions, nbest)
            log("[predict] %d answers -> %s" % (len(predictions), os.path.join(run_dir, "predictions.json")))
    dist.barrier("after-predict")
    return metrics


def _latest_checkpoint(run_dir):
    from tf_mrc.compat import tf
    latest = tf.train.latest_checkpoint(run_dir)
    return os.path.abspath(latest) if latest else None


def _already_trained(run_dir, num_train_steps, dist, log):
    """Whether rank 0's run directory holds a checkpoint at num_train_steps already (a finished run started
    again). Rank 0 decides for every rank: an Estimator skips training when its own model_dir has reached
    max_steps, and a rank that skipped while another trained would leave that one waiting forever."""
    from tf_mrc.compat import tf
    latest = _latest_checkpoint(run_dir) if dist.is_chief else None
    step = dist.broadcast_object(int(tf.train.load_variable(latest, "global_step")) if latest else 0)
    if step >= num_train_steps and dist.is_chief:
        log("[train] %s already holds step %d of %d: training skipped" % (run_dir, step, num_train_steps))
    return step >= num_train_steps


def _check_resumable(run_dir, spec):
    """Training resumes from run_dir's last checkpoint, which must hold the state these flags add."""
    from tf_mrc.compat import tf
    checkpoint = tf.train.latest_checkpoint(run_dir)
    if checkpoint is None:
        return
    stored = {name for name, _ in tf.train.list_variables(checkpoint)}
    for wanted, state, flag in ((spec.precision == "fp16", "loss_scale", "--precision=fp16"),
                                (spec.grad_accum_steps > 1, "micro_step", "--grad_accum_steps > 1")):
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
    from tf_mrc import metrics
    aggregated = metrics.aggregate_seeds(results, task.metric_names)
    outputs.write_text(os.path.join(spec.output_dir, "results.md"),
                       metrics.results_markdown(spec.task, spec.model, aggregated, task.metric_names))
    outputs.write_json(os.path.join(spec.output_dir, "eval_results.json"), {"seeds": results, "aggregate": aggregated})
    log("[seeds] %s" % json.dumps({k: v["mean"] for k, v in aggregated.items()}))
