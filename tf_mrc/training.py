"""The optimizer side of training: AdamW with BERT's decay exclusions, warmup + linear decay, clipping, mixed
precision and gradient accumulation.

AdamW is tf_mrc's own optimizer (as google BERT's AdamWeightDecayOptimizer is) because TF 1.13 has no decoupled
weight decay, and the same update must run on both stacks; it runs as two fused kernels per variable. Its slot
names (``<var>/adam_m``, ``<var>/adam_v``) match google BERT's, so checkpoints of either resume in the other.

One optimizer step (``create_train_op``), in this order:
  loss (fp32) x loss scale -> gradients, allreduced across Horovod ranks inside dist's optimizer -> [summed over
  K micro-batches in fp32 variables] -> global norm of the gradients / (loss scale x K) -> clip (one scalar per
  step, with / (loss scale x K) folded in, multiplied into each gradient inside the native AdamW op or by one
  multiply per gradient) -> AdamW unless the norm is not finite (fp16 only) ->
  global_step + 1 -> loss-scale update.
Every rank tests the allreduced gradients, so all ranks take the same skip decision.

``global_step`` counts optimizer steps, skipped ones included, never micro-batches: the learning-rate schedule,
--max_train_steps, --save_checkpoints_steps and the progress log then mean the same updates whatever
--grad_accum_steps is, and a checkpoint (written when global_step moves) never holds a half-filled sum.
Precision: variables stay float32 (master weights, so checkpoints load in fp32 code); the encoder computes in
the compute dtype; heads, loss, LayerNorm and softmax stay float32.
"""
import re

from tf_mrc.compat import tf, training_ops
from tf_mrc.modeling.checkpoint import variable_name
from tf_mrc.ops import native

NO_DECAY = ("LayerNorm", "layer_norm", "bias")
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --precision -> compute dtype


def compute_dtype(precision):
    """The compute dtype of a --precision value (checked by tf_mrc.options)."""
    return PRECISIONS[precision]


def learning_rate_schedule(base_rate, num_train_steps, num_warmup_steps, global_step=None):
    """Linear warmup from 0 to ``base_rate`` over num_warmup_steps, then linear decay to 0 at num_train_steps."""
    global_step = tf.train.get_or_create_global_step() if global_step is None else global_step
    step = tf.cast(global_step, tf.float32)
    decay = tf.maximum(0.0, 1.0 - step / float(max(num_train_steps, 1)))
    rate = base_rate * decay
    if num_warmup_steps:
        warmup = base_rate * step / float(num_warmup_steps)
        rate = tf.where(step < float(num_warmup_steps), warmup, rate)
    return rate


def global_norm_scale(grads, clip_norm, multiplier=None):
    """(scale, norm): the one scalar every gradient is multiplied by to bring grads x multiplier to global norm
    <= clip_norm, and the norm of grads x multiplier.

    tf.clip_by_global_norm's arithmetic without its TF 1.x check_numerics, which would abort a step that fp16
    loss scaling is meant to skip. ``multiplier`` (a scalar: 1 / loss scale, 1 / micro-batches) is folded into
    the scale, so a step reads every gradient twice (its norm, its update) whatever the precision and
    accumulation settings; AdamWeightDecay applies the scale inside its update where the native kernel runs.
    """
    with tf.name_scope("clip_by_global_norm"):
        present = [g for g in grads if g is not None]
        if present and native.usable(*present) and all(g.dtype.base_dtype == tf.float32 for g in present):
            norm = native.global_norm(present)  # one op over all gradients
        else:
            norm = tf.global_norm(grads)  # an L2Loss per gradient and their sum
        if multiplier is not None:
            norm *= multiplier
        scale = clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm)
        if multiplier is not None:
            scale *= multiplier
        return scale, norm


def _state_variable(name, dtype, value, shape=()):
    """Non-trainable training state (saved in checkpoints; checkpoint.py's _TRAINING_STATE knows the names)."""
    return tf.get_variable(name, shape=list(shape), dtype=dtype, initializer=tf.constant_initializer(value),
                           trainable=False)


class AdamWeightDecay(tf.train.Optimizer):
    """Adam with decoupled weight decay and no bias correction (BERT's), decay skipped for NO_DECAY names.

    google BERT's update, var -= lr * (m / (sqrt(v) + epsilon) + weight_decay * var), runs as one native op per
    variable where tf_mrc.ops.native applies (float32 on CPU): clipping's multiply, the decay and Adam in one pass
    over var, m, v and the gradient. Elsewhere it runs as the clipping multiply and two stock fused kernels per
    variable instead of a chain of parameter-sized elementwise ops:
      decay  ApplyGradientDescent(var, lr * weight_decay, delta=var): var <- var (1 - lr weight_decay)
             (decayed variables only);
      Adam   ApplyAdam(var, m, v, beta1_power=0, beta2_power=0, lr, ...): with both powers 0 its bias-corrected
             step size lr sqrt(1 - beta2_power) / (1 - beta1_power) is exactly lr, and it computes
             m += (g - m)(1 - beta1), v += (g^2 - v)(1 - beta2), var -= lr m / (sqrt(v) + epsilon),
             epsilon where BERT puts it.
    The result equals BERT's arithmetic up to rounding; the kernel's 1 - beta2 is computed in fp32, which makes
    v's new-gradient weight 1.3e-5 relative off 0.001 (float32(0.999) is not 0.999). Both kernels read m, v and
    var inside the op, so no parameter-sized temporary exists, and both run only once the (clipped) gradient
    exists.
    """

    def __init__(self, learning_rate, weight_decay_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 exclude_from_weight_decay=NO_DECAY, name="AdamWeightDecay"):
        super(AdamWeightDecay, self).__init__(False, name)
        self.learning_rate = learning_rate
        self.weight_decay_rate = weight_decay_rate
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.exclude_from_weight_decay = exclude_from_weight_decay

    def apply_gradients(self, grads_and_vars, global_step=None, name=None, gradient_scale=None):
        """``gradient_scale``: a scalar every gradient is multiplied by first (clipping's)."""
        grads_and_vars = [(tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g, v)
                          for g, v in grads_and_vars if g is not None and v is not None]
        native_update = [native.updates_variable(v, g) for g, v in grads_and_vars]
        if gradient_scale is not None:
            with tf.name_scope("clip_by_global_norm"):
                grads_and_vars = [(g if fused else g * gradient_scale, v)
                                  for (g, v), fused in zip(grads_and_vars, native_update)]
        with tf.name_scope(self.get_name()):
            return self._adamw_updates(grads_and_vars, native_update, gradient_scale, global_step, name)

    def _decays(self, param_name):
        return bool(self.weight_decay_rate) and not any(
            re.search(p, param_name) for p in self.exclude_from_weight_decay)

    def _adamw_updates(self, grads_and_vars, native_update, gradient_scale, global_step, name):
        rate = tf.convert_to_tensor(self.learning_rate, tf.float32)
        decay_rate = rate * self.weight_decay_rate
        zero = tf.constant(0.0)  # beta1_power = beta2_power = 0: the step size is lr, no bias correction
        beta_1, beta_2, epsilon = (tf.constant(value, tf.float32) for value in (self.beta_1, self.beta_2,
                                                                               self.epsilon))
        scale = tf.constant(1.0) if gradient_scale is None else tf.convert_to_tensor(gradient_scale, tf.float32)
        updates = []
        for (grad, var), fused in zip(grads_and_vars, native_update):
            param_name = variable_name(var)
            m, v = self._moments(param_name, var)
            resource = _is_resource(var)
            decays = self._decays(param_name)
            if fused:
                updates.append(native.apply_adamw(var, m, v, grad, rate, decay_rate if decays else zero, scale,
                                                  beta_1, beta_2, epsilon, resource))
                continue
            after = [grad]
            if decays:
                with tf.control_dependencies([grad]):
                    if resource:
                        after = [training_ops.resource_apply_gradient_descent(var.handle, decay_rate,
                                                                               var.read_value())]
                    else:
                        after = [training_ops.apply_gradient_descent(var, decay_rate, var.value()).op]
            with tf.control_dependencies(after):
                if resource:
                    updates.append(training_ops.resource_apply_adam(
                        var.handle, m.handle, v.handle, zero, zero, rate, beta_1, beta_2, epsilon, grad))
                else:
                    updates.append(training_ops.apply_adam(var, m, v, zero, zero, rate, beta_1, beta_2, epsilon,
                                                           grad).op)
        with tf.control_dependencies(updates):
            if global_step is None:
                return tf.no_op(name=name)
            return tf.assign_add(global_step, 1, name=name)

    @staticmethod
    def _moments(param_name, var):
        """``<var>/adam_m``, ``<var>/adam_v`` (resource variables when ``var`` is one, as the fused kernels need),
        created outside any control-flow context (control_dependencies(None) leaves it), so that the update itself
        may run inside a tf.cond: a skipped step, an accumulation boundary."""
        with tf.control_dependencies(None):
            return [tf.get_variable(param_name + suffix, shape=var.shape.as_list(), dtype=tf.float32,
                                    trainable=False, initializer=tf.zeros_initializer(),
                                    use_resource=_is_resource(var))
                    for suffix in ("/adam_m", "/adam_v")]


def _is_resource(var):
    return var.op.type == "VarHandleOp"


class LossScale:
    """fp16's dynamic loss scale: the loss is multiplied by ``loss_scale`` so that small gradients survive fp16;
    gradients are divided by it again before anything reads them.

    After each optimizer step: finite gradients -> ``good_steps`` + 1, and the scale doubles once it reaches
    ``growth_interval`` (then good_steps restarts at 0); non-finite gradients -> the step was skipped,
    ``skipped_steps`` + 1, the scale halves (never below 1) and good_steps restarts at 0.
    """

    def __init__(self, initial_scale=2.0 ** 15, growth_interval=2000):
        self.growth_interval = growth_interval
        self.scale = _state_variable("loss_scale", tf.float32, initial_scale)
        self.good_steps = _state_variable("good_steps", tf.int64, 0)
        self.skipped_steps = _state_variable("skipped_steps", tf.int64, 0)

    def scale_loss(self, loss):
        return loss * self.scale

    def update(self, finite):
        """The op that moves the state after a step whose gradients were ``finite`` (a bool scalar)."""
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_interval)
        scale = tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale), tf.maximum(self.scale * 0.5, 1.0))
        good = tf.where(tf.logical_and(finite, tf.logical_not(grow)), self.good_steps + 1,
                        tf.zeros_like(self.good_steps))
        skipped = self.skipped_steps + tf.cast(tf.logical_not(finite), tf.int64)
        return tf.group(self.scale.assign(scale), self.good_steps.assign(good), self.skipped_steps.assign(skipped))


class GradientAccumulator:
    """Sums the (loss-scaled) gradients of ``steps`` micro-batches in fp32 variables ``<var>/accum_grad``;
    ``micro_step`` counts the micro-batches summed since the last optimizer step."""

    def __init__(self, variables, steps):
        self.steps = steps
        self.sums = [tf.get_variable(variable_name(v) + "/accum_grad", shape=v.shape.as_list(), dtype=tf.float32,
                                     initializer=tf.zeros_initializer(), trainable=False) for v in variables]
        self.micro_step = _state_variable("micro_step", tf.int64, 0)

    def add(self, grads):
        """Add one micro-batch's gradients. Returns (complete, sums): a bool scalar, true when this micro-batch
        completed the sums, and the sums as the additions' outputs (None where ``grads`` has None). Read the sums
        through these, not through the variables, whose cached reads may run before the additions."""
        sums = [None if g is None else total.assign_add(g) for total, g in zip(self.sums, grads)]
        with tf.control_dependencies([total for total in sums if total is not None]):
            return tf.greater_equal(self.micro_step.assign_add(1), self.steps), sums

    def reset(self):
        return tf.group(*[total.assign(tf.zeros_like(total)) for total in self.sums] +
                        [self.micro_step.assign(0)])


def create_train_op(loss, learning_rate, num_train_steps, num_warmup_steps, dist, clip_norm=1.0,
                    weight_decay_rate=0.01, fp16_allreduce=False, precision="fp32", grad_accum_steps=1,
                    loss_scale_growth_interval=2000):
    """The train op (see the module docstring for its order). ``loss`` is float32 whatever ``precision``.
    Returns (train_op, learning_rate tensor, LossScale or None)."""
    compute_dtype(precision)  # a bad value fails here
    if grad_accum_steps < 1:
        raise ValueError("--grad_accum_steps must be >= 1, got %d" % grad_accum_steps)
    global_step = tf.train.get_or_create_global_step()
    rate = learning_rate_schedule(learning_rate, num_train_steps, num_warmup_steps, global_step)
    adamw = AdamWeightDecay(rate, weight_decay_rate=weight_decay_rate)
    optimizer = dist.wrap_optimizer(adamw, fp16_allreduce=fp16_allreduce)
    variables = tf.trainable_variables()
    loss_scale = LossScale(growth_interval=loss_scale_growth_interval) if precision == "fp16" else None
    scaled_loss = loss_scale.scale_loss(loss) if loss_scale else loss
    grads = [g for g, _ in optimizer.compute_gradients(scaled_loss, variables)]  # allreduced here
    # Embedding gradients come as IndexedSlices with a row per token; AdamW needs them dense anyway, and dense
    # they get their true norm (clip_by_global_norm would count a repeated token's rows apart), the same norm a
    # sum over micro-batches has.
    grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
    # The loss scale and the micro-batch mean are scalars folded into clipping's one multiply per gradient.
    unscale = 1.0 / loss_scale.scale if loss_scale else None

    def optimizer_step(grads, multiplier):
        scale, norm = global_norm_scale(grads, clip_norm, multiplier)

        def apply():  # the gradients are allreduced already: the wrapper's apply_gradients would only delegate
            return adamw.apply_gradients(list(zip(grads, variables)), gradient_scale=scale)

        if loss_scale is None:
            applied = apply()
        else:
            finite = tf.is_finite(norm)  # any inf/nan gradient makes the norm inf/nan
            applied = tf.cond(finite, apply, tf.no_op)
        with tf.control_dependencies([applied]):
            after = [tf.assign_add(global_step, 1)]
            if loss_scale is not None:
                after.append(loss_scale.update(finite))
            return tf.group(*after)

    if grad_accum_steps == 1:
        return optimizer_step(grads, unscale), rate, loss_scale
    accumulator = GradientAccumulator(variables, grad_accum_steps)
    complete, sums = accumulator.add(grads)

    def boundary():  # the mean is taken in here, so only on every K-th micro-batch
        mean = 1.0 / float(grad_accum_steps)
        with tf.control_dependencies([optimizer_step(sums, mean if unscale is None else unscale * mean)]):
            return accumulator.reset()

    return tf.group(tf.cond(complete, boundary, tf.no_op)), rate, loss_scale
