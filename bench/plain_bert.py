"""The baseline bench_training compares tf_mrc's step with: google-research/bert's modeling.py structure and
run_squad.py's span loss, written compactly against the same TensorFlow, trained with tf.train.AdamOptimizer and
no gradient clipping. This is the graph a user would otherwise take from google-research/bert.

Kept from modeling.py: word embeddings by tf.gather, token types by a one-hot matmul, the [B, T, T] float
attention mask, 2-D activations [B*T, H], dense layers as matmul + bias_add, the -10000 additive mask, softmax,
tf.nn.dropout, the tanh GELU with tf.pow, contrib's layer_norm arithmetic (nn.moments + nn.batch_normalization,
epsilon 1e-12), and run_squad's log-softmax span loss.
"""
import math

import numpy as np

from tf_mrc.compat import tf


def _dense(x, units, name, initializer, activation=None):
    with tf.variable_scope(name):
        kernel = tf.get_variable("kernel", [x.shape.as_list()[-1], units], initializer=initializer)
        bias = tf.get_variable("bias", [units], initializer=tf.zeros_initializer())
        output = tf.nn.bias_add(tf.matmul(x, kernel), bias)
    return activation(output) if activation else output


def _gelu(x):
    return x * 0.5 * (1.0 + tf.tanh(math.sqrt(2.0 / np.pi) * (x + 0.044715 * tf.pow(x, 3))))


def _layer_norm(x, name):
    with tf.variable_scope(name):
        width = x.shape.as_list()[-1]
        beta = tf.get_variable("beta", [width], initializer=tf.zeros_initializer())
        gamma = tf.get_variable("gamma", [width], initializer=tf.ones_initializer())
        mean, variance = tf.nn.moments(x, [x.shape.ndims - 1], keep_dims=True)
        return tf.nn.batch_normalization(x, mean, variance, beta, gamma, 1e-12)


def _dropout(x, rate):
    return tf.nn.dropout(x, rate=rate)


def span_loss(config, features, dropout=0.1):
    """The span loss of a BERT encoder built as google-research/bert builds it."""
    batch, seq = features["input_ids"].shape.as_list()
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_size = hidden // heads
    initializer = tf.truncated_normal_initializer(stddev=0.02)
    with tf.variable_scope("bert"):
        with tf.variable_scope("embeddings"):
            words = tf.get_variable("word_embeddings", [config.vocab_size, hidden], initializer=initializer)
            output = tf.reshape(tf.gather(words, tf.reshape(features["input_ids"], [-1])), [batch, seq, hidden])
            token_types = tf.get_variable("token_type_embeddings", [config.type_vocab_size, hidden],
                                          initializer=initializer)
            one_hot = tf.one_hot(tf.reshape(features["segment_ids"], [-1]), depth=config.type_vocab_size)
            output += tf.reshape(tf.matmul(one_hot, token_types), [batch, seq, hidden])
            positions = tf.get_variable("position_embeddings", [config.max_position_embeddings, hidden],
                                        initializer=initializer)
            output += tf.reshape(tf.slice(positions, [0, 0], [seq, -1]), [1, seq, hidden])
            output = _dropout(_layer_norm(output, "LayerNorm"), dropout)
        mask = tf.cast(tf.reshape(features["input_mask"], [batch, 1, seq]), tf.float32) * tf.ones([batch, seq, 1])
        adder = (1.0 - tf.expand_dims(mask, 1)) * -10000.0
        layer_input = tf.reshape(output, [batch * seq, hidden])

        def heads_first(x):
            return tf.transpose(tf.reshape(x, [batch, seq, heads, head_size]), [0, 2, 1, 3])

        with tf.variable_scope("encoder"):
            for index in range(config.num_hidden_layers):
                with tf.variable_scope("layer_%d" % index):
                    with tf.variable_scope("attention/self"):
                        query, key, value = (heads_first(_dense(layer_input, hidden, name, initializer))
                                             for name in ("query", "key", "value"))
                        scores = tf.matmul(query, key, transpose_b=True) * (1.0 / math.sqrt(float(head_size)))
                        probs = _dropout(tf.nn.softmax(scores + adder), dropout)
                        context = tf.transpose(tf.matmul(probs, value), [0, 2, 1, 3])
                        context = tf.reshape(context, [batch * seq, hidden])
                    with tf.variable_scope("attention/output"):
                        attended = _dropout(_dense(context, hidden, "dense", initializer), dropout)
                        attended = _layer_norm(attended + layer_input, "LayerNorm")
                    with tf.variable_scope("intermediate"):
                        intermediate = _dense(attended, config.intermediate_size, "dense", initializer, _gelu)
                    with tf.variable_scope("output"):
                        output = _dropout(_dense(intermediate, hidden, "dense", initializer), dropout)
                        layer_input = _layer_norm(output + attended, "LayerNorm")
    weights = tf.get_variable("cls/squad/output_weights", [2, hidden], initializer=initializer)
    bias = tf.get_variable("cls/squad/output_bias", [2], initializer=tf.zeros_initializer())
    logits = tf.nn.bias_add(tf.matmul(layer_input, weights, transpose_b=True), bias)
    logits = tf.unstack(tf.transpose(tf.reshape(logits, [batch, seq, 2]), [2, 0, 1]), axis=0)

    def position_loss(logits, positions):
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        return -tf.reduce_mean(tf.reduce_sum(tf.one_hot(positions, depth=seq) * log_probs, axis=-1))

    return (position_loss(logits[0], features["start_position"]) +
            position_loss(logits[1], features["end_position"])) / 2.0


def train_op(loss, learning_rate=3e-5):
    return tf.train.AdamOptimizer(learning_rate).minimize(loss, global_step=tf.train.get_or_create_global_step())
