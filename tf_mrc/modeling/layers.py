"""Building blocks shared by the BERT, ALBERT and XLNet layouts.

BERT and ALBERT run on 2-D activations [B*T, width] (as google-research/bert does), XLNet batch-major
[B, T, width]; ``dense`` and ``layer_norm`` take either. Every helper creates its variables with
``tf.get_variable`` under the caller's variable scope, so the published checkpoints' names come from the scopes the
layouts open. Variables are always float32; ``Settings.dtype`` is the compute dtype the activations are cast to,
with LayerNorm and the attention softmax computed in float32 whatever it is.

``Settings.recompute`` (training only) turns on gradient checkpointing per transformer block: a block keeps only
its input for backprop and runs again in the backward pass (``recomputed``), with its dropout masks regenerated
from a per-step seed (``SeededDropout``). Its variables are then resource variables, which tf.custom_gradient
requires in graph mode; they save and load under the same names.
"""
import collections
import functools
import math

from tf_mrc import ops
from tf_mrc.compat import IS_TF1, tf
from tf_mrc.modeling import EncoderOutput
from tf_mrc.modeling.config import LAYER_NORM_EPSILON

COMPUTE_DTYPES = ("float32", "float16", "bfloat16")

Settings = collections.namedtuple(
    "Settings", ["dtype", "kernels", "initializer", "hidden_dropout", "attention_dropout", "activation",
                 "attention_dropout_placement", "recompute", "dropout_fn"])

# Variable scopes of one transformer block, relative to the block's own scope.
BlockNames = collections.namedtuple(
    "BlockNames", ["attention", "attention_output", "attention_norm", "intermediate", "output", "output_norm"])

BERT_BLOCK = BlockNames(attention="attention/self", attention_output="attention/output/dense",
                        attention_norm="attention/output/LayerNorm", intermediate="intermediate/dense",
                        output="output/dense", output_norm="output/LayerNorm")


def make_settings(config, is_training, kernels, compute_dtype, initializer=None, attention_dropout_placement="probs",
                  recompute=False):
    """Collect what every layer needs; dropout rates are zero and recompute is off unless training.
    ``initializer`` of new weights: default BERT's truncated normal of stddev ``config.initializer_range``."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError("compute_dtype must be one of %s, got %r" % ("|".join(COMPUTE_DTYPES), compute_dtype))
    if compute_dtype == "bfloat16" and IS_TF1:
        raise ValueError("compute_dtype=bfloat16 needs TF 2 (TF 1.13 has no bfloat16 batch-matmul kernel); "
                         "use float16")
    ops.resolve_backend(kernels)  # a bad --kernels value fails here, before any variable exists
    if initializer is None:
        initializer = tf.truncated_normal_initializer(stddev=config.initializer_range)
    return Settings(dtype=tf.as_dtype(compute_dtype), kernels=kernels, initializer=initializer,
                    hidden_dropout=config.hidden_dropout_prob if is_training else 0.0,
                    attention_dropout=config.attention_probs_dropout_prob if is_training else 0.0,
                    activation=config.activation(), attention_dropout_placement=attention_dropout_placement,
                    recompute=bool(recompute and is_training),
                    dropout_fn=functools.partial(ops.dropout, kernels=kernels))


def cast(x, dtype):
    return x if x.dtype.base_dtype == dtype else tf.cast(x, dtype)


def variable(name, shape, settings, initializer=None):
    """A float32 variable in the current scope; weights default to the settings' initializer."""
    return tf.get_variable(name, shape=shape, dtype=tf.float32, initializer=initializer or settings.initializer,
                           use_resource=True if settings.recompute else None)


def weight(name, shape, settings, initializer=None):
    """A float32 variable cast to the compute dtype, so fp16/bf16 compute keeps fp32 master weights."""
    return cast(variable(name, shape, settings, initializer), settings.dtype)


def dense(x, units, settings, activation=None, use_bias=True):
    """x [..., in] @ kernel [in, units] + bias, in the current variable scope (kernels stored 2-D, as published)."""
    shape = shape_list(x)
    flat = x if len(shape) == 2 else tf.reshape(x, [-1, shape[-1]])
    output = tf.matmul(flat, weight("kernel", [shape[-1], units], settings))
    if use_bias:
        output = tf.nn.bias_add(output, weight("bias", [units], settings, tf.zeros_initializer()))
    if len(shape) != 2:
        output = tf.reshape(output, shape[:-1] + [units])
    return activation(output) if activation is not None else output


def layer_norm(x, settings, residual=None):
    """LayerNorm of x (+ residual) over the last axis, computed in float32 by the selected kernel backend
    (reference: contrib's layer_norm ops; fused: one op pair that keeps only what its gradient needs)."""
    width = x.shape.as_list()[-1]
    beta = variable("beta", [width], settings, tf.zeros_initializer())
    gamma = variable("gamma", [width], settings, tf.ones_initializer())
    return cast(ops.layer_norm(x, gamma, beta, LAYER_NORM_EPSILON, residual, settings.kernels), settings.dtype)


def hidden_activation(settings):
    """The FFN activation named by the config; GELU goes through the selected kernel backend."""
    kind, gelu_form = settings.activation
    if kind == "gelu":
        return lambda x: ops.gelu(x, gelu_form, settings.kernels)
    if kind == "relu":
        return tf.nn.relu
    if kind == "tanh":
        return tf.tanh
    return lambda x: x * tf.sigmoid(x)  # swish


def shape_list(x):
    """Static dimensions where known, dynamic scalars elsewhere (the batch is often unknown at export)."""
    static = x.shape.as_list()
    dynamic = tf.shape(x)
    return [dim if dim is not None else dynamic[i] for i, dim in enumerate(static)]


def embeddings(input_ids, segment_ids, config, settings, embedding_size, projection_size=None):
    """Word + token-type + position embeddings, LayerNorm, dropout -> [B*T, width], in scope ``embeddings``.

    ``projection_size`` adds brightmart albert_zh's factorization: the [V, E] word vectors are multiplied by
    ``word_embeddings_2`` [E, H] before the token-type and position embeddings (then at H) are added.
    """
    batch_size, seq_length = shape_list(input_ids)
    with tf.variable_scope("embeddings"):
        words = variable("word_embeddings", [config.vocab_size, embedding_size], settings)
        output = cast(tf.gather(words, tf.reshape(input_ids, [-1])), settings.dtype)
        width = embedding_size
        if projection_size is not None:
            output = tf.matmul(output, weight("word_embeddings_2", [embedding_size, projection_size], settings))
            width = projection_size
        token_types = variable("token_type_embeddings", [config.type_vocab_size, width], settings)
        output += cast(tf.gather(token_types, tf.reshape(segment_ids, [-1])), settings.dtype)
        positions = variable("position_embeddings", [config.max_position_embeddings, width], settings)
        positions = cast(tf.slice(positions, [0, 0], [seq_length, -1]), settings.dtype)
        output = tf.reshape(output, [batch_size, seq_length, width]) + positions
        with tf.variable_scope("LayerNorm"):
            output = layer_norm(tf.reshape(output, [-1, width]), settings)
        return settings.dropout_fn(output, settings.hidden_dropout)


def attention_mask(input_mask):
    """[B, T] 1/0 -> [B, 1, T] float32: every query position may attend to every real key position."""
    return tf.expand_dims(tf.cast(input_mask, tf.float32), 1)


def self_attention(x, mask, batch_size, seq_length, config, settings):
    """Multi-head self-attention context [B*T, N*D] from query/key/value dense layers in the current scope."""
    heads, head_size = config.num_attention_heads, config.head_size

    def project(name):
        with tf.variable_scope(name):
            output = dense(x, heads * head_size, settings)
        return tf.transpose(tf.reshape(output, [batch_size, seq_length, heads, head_size]), [0, 2, 1, 3])

    query, key, value = project("query"), project("key"), project("value")
    scores = tf.matmul(query, key, transpose_b=True)  # [B, N, T, T]
    if settings.kernels == "reference":  # the other backends compute fp16/bf16 in fp32 inside and keep for
        scores = cast(scores, tf.float32)  # backprop only their output, in the compute dtype (half the bytes)
    scale = 1.0 / math.sqrt(float(head_size))
    if (settings.attention_dropout and settings.attention_dropout_placement == "probs" and
            not isinstance(settings.dropout_fn, SeededDropout)):
        context = ops.dropped_attention(scores, mask, scale, settings.attention_dropout, value, settings.kernels)
    else:  # no dropout on the probabilities, or a recomputed block's seeded dropout
        probs = ops.masked_softmax(scores, mask, scale, settings.kernels)
        context = tf.matmul(attention_dropout(cast(probs, settings.dtype), "probs", settings), value)
    context = tf.transpose(context, [0, 2, 1, 3])  # [B, T, N, D]
    return attention_dropout(tf.reshape(context, [-1, heads * head_size]), "context", settings)


def attention_dropout(x, site, settings):
    return ops.attention_dropout(x, settings.attention_dropout, site, settings.attention_dropout_placement,
                                 settings.dropout_fn)


def transformer_block(x, mask, batch_size, seq_length, config, settings, names):
    """Post-LN block: x -> LN(x + attention) -> LN(. + FFN(.)); ``names`` place each variable group."""
    if not settings.recompute:
        return _block(x, mask, batch_size, seq_length, config, settings, names)
    seed = tf.random.uniform([2], maxval=_SEED_RANGE, dtype=tf.int64)  # one per block and step
    return recomputed(lambda h: _block(h, mask, batch_size, seq_length, config,
                                       settings._replace(dropout_fn=SeededDropout(seed)), names), x)


def _block(x, mask, batch_size, seq_length, config, settings, names):
    dropout_fn = settings.dropout_fn
    with tf.variable_scope(names.attention):
        context = self_attention(x, mask, batch_size, seq_length, config, settings)
    with tf.variable_scope(names.attention_output):
        attended = dropout_fn(dense(context, config.hidden_size, settings), settings.hidden_dropout)
    with tf.variable_scope(names.attention_norm):
        attended = layer_norm(attended, settings, residual=x)
    with tf.variable_scope(names.intermediate):
        intermediate = dense(attended, config.intermediate_size, settings, hidden_activation(settings))
    with tf.variable_scope(names.output):
        output = dropout_fn(dense(intermediate, config.hidden_size, settings), settings.hidden_dropout)
    with tf.variable_scope(names.output_norm):
        return layer_norm(output, settings, residual=attended)


_SEED_RANGE = 2 ** 62


class SeededDropout:
    """Dropout whose masks are a function of (seed, call order), so a recomputed block, calling a fresh instance
    with the same seed tensor, gets the forward pass's masks back (tf.nn.dropout would draw new ones)."""

    def __init__(self, seed):
        self._seed = seed
        self._calls = 0

    def __call__(self, x, rate):
        if not rate:
            return x
        self._calls += 1
        uniform = tf.random.stateless_uniform(tf.shape(x), seed=self._seed + [0, self._calls])
        keep = tf.cast(uniform >= rate, x.dtype)
        return x * keep * tf.cast(1.0 / (1.0 - rate), x.dtype)


def recomputed(fn, x):
    """``fn(x)`` keeping only ``x`` for backprop: the backward pass runs ``fn`` again and differentiates that.

    fn must give the same result when run again (seeded dropout) and read only resource variables, which it may
    create; their gradients come back through tf.custom_gradient's ``variables``. Tensors fn captures from outside
    get no gradient (here: the attention mask and shapes, which need none).
    """
    scope = tf.get_variable_scope()

    @tf.custom_gradient
    def checkpointed(x):
        def backward(dy, variables=None):
            with tf.control_dependencies([dy]):  # recompute only when the gradient arrives, not during forward
                # stop_gradient: the variables' gradients must come from this block only, not also through x
                # from earlier blocks that share them (ALBERT)
                x_again = tf.stop_gradient(x)
                with tf.variable_scope(scope, reuse=True):
                    y = fn(x_again)
                grads = tf.gradients(y, [x_again] + list(variables or []), grad_ys=dy)
            return (grads[0], grads[1:]) if variables else grads[0]

        return fn(x), backward

    return checkpointed(x)


def bert_scope_encode(config, input_ids, input_mask, segment_ids, is_training, kernels, compute_dtype,
                      attention_dropout_placement, recompute, embedding_size, run_blocks, block_names=BERT_BLOCK,
                      projection_size=None):
    """The encoder BERT and ALBERT share under scope ``bert`` -> EncoderOutput: embeddings at ``embedding_size``
    (``projection_size``: see ``embeddings``), then ``run_blocks(hidden, block, config, settings)`` in scope
    ``encoder``, where ``block(x)`` is one transformer block with ``block_names`` in the caller's scope, then BERT's
    pooler. The layouts differ only in these arguments."""
    settings = make_settings(config, is_training, kernels, compute_dtype,
                             attention_dropout_placement=attention_dropout_placement, recompute=recompute)
    batch_size, seq_length = shape_list(input_ids)
    with tf.variable_scope("bert"):
        hidden = embeddings(input_ids, segment_ids, config, settings, embedding_size, projection_size)
        mask = attention_mask(input_mask)

        def block(x):
            return transformer_block(x, mask, batch_size, seq_length, config, settings, block_names)

        with tf.variable_scope("encoder"):
            hidden = run_blocks(hidden, block, config, settings)
        return encoder_output(hidden, batch_size, seq_length, config, settings)


def encoder_output(hidden, batch_size, seq_length, config, settings):
    """[B*T, H] -> EncoderOutput with BERT's pooler (tanh dense over the first token) in scope ``pooler/dense``."""
    sequence = tf.reshape(hidden, [batch_size, seq_length, config.hidden_size])
    with tf.variable_scope("pooler/dense"):
        pooled = dense(sequence[:, 0, :], config.hidden_size, settings, tf.tanh)
    return EncoderOutput(sequence_output=cast(sequence, tf.float32), pooled_output=cast(pooled, tf.float32))
