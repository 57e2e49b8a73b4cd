"""The optimizer side of training: AdamW with BERT's decay exclusions, warmup + linear decay, clipping.

AdamW is written out (as google BERT's AdamWeightDecayOptimizer is) because TF 1.13 has no decoupled
weight decay, and the same update must run on both stacks. Its slot names (``<var>/adam_m``,
``<var>/adam_v``) match google BERT's, so checkpoints of either resume in the other.
"""
import re

from tf_mrc.compat import tf

NO_DECAY = ("LayerNorm", "layer_norm", "bias")


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


class AdamWeightDecay(tf.train.Optimizer):
    """Adam with decoupled weight decay and no bias correction (BERT's), decay skipped for NO_DECAY names."""

    def __init__(self, learning_rate, weight_decay_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 exclude_from_weight_decay=NO_DECAY, name="AdamWeightDecay"):
        super(AdamWeightDecay, self).__init__(False, name)
        self.learning_rate = learning_rate
        self.weight_decay_rate = weight_decay_rate
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.exclude_from_weight_decay = exclude_from_weight_decay

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        assignments = []
        for grad, var in grads_and_vars:
            if grad is None or var is None:
                continue
            param_name = re.sub(r":\d+$", "", var.name)
            m = tf.get_variable(param_name + "/adam_m", shape=var.shape.as_list(), dtype=tf.float32,
                                trainable=False, initializer=tf.zeros_initializer())
            v = tf.get_variable(param_name + "/adam_v", shape=var.shape.as_list(), dtype=tf.float32,
                                trainable=False, initializer=tf.zeros_initializer())
            if isinstance(grad, tf.IndexedSlices):
                grad = tf.convert_to_tensor(grad)
            next_m = self.beta_1 * m + (1.0 - self.beta_1) * grad
            next_v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad)
            update = next_m / (tf.sqrt(next_v) + self.epsilon)
            if self.weight_decay_rate and not any(re.search(p, param_name) for p in self.exclude_from_weight_decay):
                update += self.weight_decay_rate * var
            assignments.extend([var.assign_sub(self.learning_rate * update), m.assign(next_m), v.assign(next_v)])
        with tf.control_dependencies(assignments):
            if global_step is None:
                return tf.no_op(name=name)
            return tf.assign_add(global_step, 1, name=name)


def create_train_op(loss, learning_rate, num_train_steps, num_warmup_steps, dist, clip_norm=1.0,
                    weight_decay_rate=0.01, fp16_allreduce=False):
    """The train op: gradients (allreduced across ranks by ``dist``), clipped by global norm, AdamW step,
    global_step + 1. Returns (train_op, learning_rate tensor)."""
    global_step = tf.train.get_or_create_global_step()
    rate = learning_rate_schedule(learning_rate, num_train_steps, num_warmup_steps, global_step)
    optimizer = dist.wrap_optimizer(AdamWeightDecay(rate, weight_decay_rate=weight_decay_rate),
                                    fp16_allreduce=fp16_allreduce)
    variables = tf.trainable_variables()
    grads_and_vars = optimizer.compute_gradients(loss, variables)
    grads = [g for g, _ in grads_and_vars]
    grads, _ = tf.clip_by_global_norm(grads, clip_norm=clip_norm)
    train_op = optimizer.apply_gradients(list(zip(grads, variables)), global_step=global_step)
    return train_op, rate
