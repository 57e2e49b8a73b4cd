"""model_fn builder, the progress hook, and the Estimator around them.

One model_fn serves every task and encoder: the encoder comes from the config's layout, the head from the
task's kind. Multiple-choice features arrive as [B, C, T] and are flattened to [B*C, T] for the encoder.
"""
import time

from tf_mrc.compat import estimator as tf_estimator
from tf_mrc.compat import tf
from tf_mrc.modeling import build_encoder
from tf_mrc.modeling.heads import build_head
from tf_mrc.modeling.layouts import descriptor

INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")


class ProgressHook(tf.train.SessionRunHook):
    """Logs loss, steps/s and an ETA every ``every`` (optimizer) steps (rank 0 only); with fp16 also the loss
    scale and how many steps were skipped for non-finite gradients."""

    def __init__(self, loss, total_steps, every=50, log=print, loss_scale=None):
        self._loss, self._total, self._every, self._log = loss, total_steps, every, log
        self._loss_scale = loss_scale
        self._start = None
        self._logged = None

    def begin(self):
        self._global_step = tf.train.get_or_create_global_step()

    def before_run(self, run_context):
        return tf.train.SessionRunArgs([self._loss, self._global_step])

    def after_run(self, run_context, run_values):
        loss, step = run_values.results
        now = time.time()
        if self._start is None:
            self._start, self._first = now, step
            return
        # with --grad_accum_steps the step stays put for several runs: log it once
        if (step % self._every == 0 or step >= self._total) and step != self._logged:
            self._logged = step
            rate = (step - self._first) / max(now - self._start, 1e-9)
            eta = (self._total - step) / rate if rate > 0 else float("inf")
            scale = ""
            if self._loss_scale is not None:  # read after the step, so the figures include its update
                value, skipped = run_context.session.run([self._loss_scale.scale, self._loss_scale.skipped_steps])
                scale = "  loss scale %g  skipped %d" % (value, skipped)
            self._log("[train] step %d/%d  loss %.4f  %.2f steps/s  ETA %s%s" % (
                step, self._total, loss, rate, _format_seconds(eta), scale))


def _format_seconds(seconds):
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def model_fn_builder(task, config, spec=None, plan=None, dist=None, log=print):
    """The model_fn. ``spec``: the run's options (tf_mrc.experiment.RunSpec: kernels, precision, init_checkpoint,
    ...); ``plan``: its TrainingPlan (learning rate, optimizer steps, warmup, accumulation, weight decay), which
    only training reads. ``spec.precision`` sets the encoder's compute dtype (variables stay float32) and, for
    fp16, the dynamic loss scale. TensorBoard gets the loss (the Estimator's), the learning rate and, for fp16,
    the loss scale and the skipped steps."""
    from tf_mrc import distributed, training
    from tf_mrc.experiment import RunSpec, TrainingPlan
    from tf_mrc.modeling.checkpoint import init_from_checkpoint
    spec = spec or RunSpec()
    plan = plan or TrainingPlan()
    dist = dist or distributed.SingleProcess()
    num_choices = getattr(task, "num_choices", None)

    def model_fn(features, labels, mode, params):
        is_training = mode == tf_estimator.ModeKeys.TRAIN
        inputs = {name: features[name] for name in INPUT_NAMES}
        if task.head == "choice":
            seq_len = int(features["input_ids"].shape[-1])
            inputs = {name: tf.reshape(value, [-1, seq_len]) for name, value in inputs.items()}
        encoder_output = build_encoder(config, inputs["input_ids"], inputs["input_mask"], inputs["segment_ids"],
                                       is_training, kernels=spec.kernels,
                                       compute_dtype=training.compute_dtype(spec.precision),
                                       attention_dropout_placement=spec.attention_dropout_placement,
                                       recompute=spec.recompute)
        with_loss = mode != tf_estimator.ModeKeys.PREDICT
        outputs, loss = build_head(task.head, encoder_output, features, num_choices, config.initializer_range,
                                   with_loss, dropout_rate=config.hidden_dropout_prob if is_training else 0.0,
                                   span_head=descriptor(config).span_head)
        if is_training and spec.init_checkpoint:
            init_from_checkpoint(spec.init_checkpoint, log=log)
        if mode == tf_estimator.ModeKeys.PREDICT:
            predictions = dict(outputs, example_index=features["example_index"])
            return tf_estimator.EstimatorSpec(mode, predictions=predictions)
        if mode == tf_estimator.ModeKeys.EVAL:
            return tf_estimator.EstimatorSpec(mode, loss=loss,
                                              eval_metric_ops={"eval_loss": tf.metrics.mean(loss)})
        train_op, rate, loss_scale = training.create_train_op(
            loss, plan.learning_rate, plan.num_train_steps, plan.warmup_steps, dist,
            weight_decay_rate=plan.weight_decay, fp16_allreduce=spec.fp16_allreduce, precision=spec.precision,
            grad_accum_steps=plan.grad_accum_steps, loss_scale_growth_interval=spec.loss_scale_growth_interval)
        tf.summary.scalar("learning_rate", rate)
        if loss_scale is not None:
            tf.summary.scalar("fp16/loss_scale", loss_scale.scale)
            tf.summary.scalar("fp16/skipped_steps", loss_scale.skipped_steps)
        hooks = list(dist.training_hooks())
        if dist.is_chief:
            hooks.append(ProgressHook(loss, plan.num_train_steps, every=spec.log_every, log=log,
                                      loss_scale=loss_scale))
        return tf_estimator.EstimatorSpec(mode, loss=loss, train_op=train_op, training_hooks=hooks)

    return model_fn


def session_config(dist, xla=False):
    """dist's session config, with XLA JIT auto-clustering when ``xla`` (best effort: TF clusters what it can;
    on CPU, TF 2.x clusters only with TF_XLA_FLAGS=--tf_xla_cpu_global_jit in the environment)."""
    config = dist.session_config()
    if not xla:
        return config
    with_xla = tf.ConfigProto()
    if config is not None:
        with_xla.CopyFrom(config)
    with_xla.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
    return with_xla


def make_estimator(model_fn, model_dir, dist, seed=None, save_checkpoints_steps=1000, keep_checkpoint_max=3,
                   save_summary_steps=100, xla=False):
    """The Estimator; only rank 0 writes checkpoints and summaries. ``model_dir``: rank 0's run directory, or
    another rank's private one (its Estimator needs a directory; the caller removes it)."""
    import os
    run_config = tf_estimator.RunConfig(
        model_dir=model_dir, tf_random_seed=seed, session_config=session_config(dist, xla),
        save_checkpoints_steps=save_checkpoints_steps if dist.is_chief else None,
        save_summary_steps=save_summary_steps if dist.is_chief else 0,
        keep_checkpoint_max=keep_checkpoint_max, log_step_count_steps=None if not dist.is_chief else 1000)
    os.makedirs(model_dir, exist_ok=True)
    return tf_estimator.Estimator(model_fn=model_fn, config=run_config)


def predict_outputs(estimator, input_fn, checkpoint_path=None):
    """Every feature's outputs, as dicts of numpy arrays, in input order."""
    return list(estimator.predict(input_fn, checkpoint_path=checkpoint_path, yield_single_examples=True))
