"""Task heads over any encoder's output: span, span + answer class (CJRC), multiple choice.

Weights are stored [out, in] under ``cls/...`` like google BERT's run_squad (``cls/squad/output_weights``),
so SQuAD-style fine-tuned checkpoints load and the PyTorch heads (qa_outputs, classifier) map one to one.
The span part comes in the encoder layout's own form (its descriptor's ``span_head``): ``linear`` is BERT's
run_squad head, ``xlnet`` zihangdai/xlnet's run_squad head (see xlnet_span_head).
"""
from tf_mrc.compat import tf
from tf_mrc.modeling.config import LAYER_NORM_EPSILON
from tf_mrc.tokenization.sentencepiece import SEG_ID_CLS

HEAD_KINDS = ("span", "span_class", "choice")
SPAN_HEADS = ("linear", "xlnet")
NUM_ANSWER_CLASSES = 4  # span | yes | no | unknown
START_N_TOP = END_N_TOP = 5  # XLNet run_squad's beam: the top starts, and the top ends of each
MASKED = 1e30                # XLNet's logit penalty for positions that cannot hold an answer


def _output_layer(inputs, scope, num_outputs, initializer_range):
    """inputs [N, H] -> [N, num_outputs] with weights [num_outputs, H] (google BERT's classifier layout)."""
    hidden = int(inputs.shape[-1])
    with tf.variable_scope(scope):
        weights = tf.get_variable("output_weights", [num_outputs, hidden],
                                  initializer=tf.truncated_normal_initializer(stddev=initializer_range))
        bias = tf.get_variable("output_bias", [num_outputs], initializer=tf.zeros_initializer())
    return tf.nn.bias_add(tf.matmul(inputs, weights, transpose_b=True), bias)


def _cross_entropy(logits, labels, weights=None):
    """Mean softmax cross-entropy, optionally weighted per example (weights of 0 switch examples off)."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if weights is None:
        return tf.reduce_mean(losses)
    weights = tf.cast(weights, losses.dtype)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def span_logits(sequence_output, initializer_range):
    """start_logits, end_logits [B, T] from the encoder's sequence output [B, T, H]."""
    batch, length, hidden = tf.shape(sequence_output)[0], tf.shape(sequence_output)[1], int(sequence_output.shape[-1])
    flat = tf.reshape(sequence_output, [-1, hidden])
    logits = tf.reshape(_output_layer(flat, "cls/squad", 2, initializer_range), [batch, length, 2])
    return logits[:, :, 0], logits[:, :, 1]


def _dense(inputs, units, scope, initializer_range, activation=None, use_bias=True):
    """tf.layers.dense's variables (``scope/kernel`` [in, units], ``scope/bias``) over the last axis of any rank,
    with XLNet's initializer (normal, not truncated)."""
    width = int(inputs.shape[-1])
    with tf.variable_scope(scope):
        kernel = tf.get_variable("kernel", [width, units],
                                 initializer=tf.random_normal_initializer(stddev=initializer_range))
        outputs = tf.reshape(tf.matmul(tf.reshape(inputs, [-1, width]), kernel),
                             tf.concat([tf.shape(inputs)[:-1], [units]], 0))
        if use_bias:
            outputs += tf.get_variable("bias", [units], initializer=tf.zeros_initializer())
    return outputs if activation is None else activation(outputs)


def _layer_norm(inputs):
    """tf.contrib.layers.layer_norm over the last axis (``LayerNorm/beta|gamma``), as XLNet's end head uses."""
    width = int(inputs.shape[-1])
    with tf.variable_scope("LayerNorm"):
        beta = tf.get_variable("beta", [width], initializer=tf.zeros_initializer())
        gamma = tf.get_variable("gamma", [width], initializer=tf.ones_initializer())
    mean, variance = tf.nn.moments(inputs, [inputs.shape.ndims - 1], keep_dims=True)
    return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, LAYER_NORM_EPSILON)


def _masked(logits, allowed):
    """XLNet's ``logits * (1 - p_mask) - 1e30 * p_mask`` with ``allowed`` = 1 - p_mask."""
    return logits * allowed - MASKED * (1.0 - allowed)


def xlnet_answer_positions(segment_ids):
    """[B, T] float: 1 where an answer may start or end (passage tokens and <cls>), XLNet's 1 - p_mask.

    Span windows of the xlnet layout are ``P <sep> Q <sep> <cls>`` with the passage and its <sep> in segment 0:
    a passage token is a segment-0 position followed by another segment-0 position (the <sep> is followed by
    the question's segment 1, or by <cls> when the question is empty)."""
    in_passage = tf.equal(segment_ids, 0)
    followed = tf.concat([in_passage[:, 1:], tf.zeros_like(in_passage[:, :1])], 1)
    return tf.cast(tf.logical_or(tf.logical_and(in_passage, followed), tf.equal(segment_ids, SEG_ID_CLS)),
                   tf.float32)


def _end_logits(hidden, start_states, initializer_range):
    """XLNet's end logits given start states broadcast to hidden's shape: dense_0 (tanh) -> LayerNorm -> dense_1."""
    with tf.variable_scope("end_logits"):
        states = _dense(tf.concat([hidden, start_states], -1), int(hidden.shape[-1]), "dense_0", initializer_range,
                        tf.tanh)
        return tf.squeeze(_dense(_layer_norm(states), 1, "dense_1", initializer_range), -1)


def xlnet_span_head(sequence_output, features, initializer_range, with_loss, dropout_rate=0.0):
    """zihangdai/xlnet run_squad's head (transformers' XLNetForQuestionAnswering): (outputs, loss or None).

    Start logits from ``start_logits/dense``; end logits from ``end_logits/{dense_0,LayerNorm,dense_1}`` over
    [hidden; hidden at the start], the start being the gold one when labels are given (training, evaluation)
    and each of the START_N_TOP best starts otherwise; the answer-class logit (the window holds no answer) from
    ``answer_class/{dense_0,dense_1}`` over [start-probability-weighted hidden; hidden at <cls>]. Positions
    outside the passage and <cls> are masked to -1e30 before every softmax.
    Outputs when predicting: start_top_log_probs / start_top_index [B, START_N_TOP], end_top_log_probs /
    end_top_index [B, START_N_TOP * END_N_TOP] (entry i * END_N_TOP + j: the j-th end of the i-th start),
    cls_logits [B]. Loss: mean of start and end cross-entropy plus half the answer class's sigmoid
    cross-entropy, labelled 1 where the gold start is <cls>.
    """
    hidden = sequence_output
    allowed = xlnet_answer_positions(features["segment_ids"])
    is_cls = tf.cast(tf.equal(features["segment_ids"], SEG_ID_CLS), tf.float32)
    length = tf.shape(hidden)[1]
    with tf.variable_scope("start_logits"):
        start_logits = _masked(tf.squeeze(_dense(hidden, 1, "dense", initializer_range), -1), allowed)
    start_log_probs = tf.nn.log_softmax(start_logits, -1)
    outputs, loss = {}, None
    if with_loss:
        gold_start = tf.one_hot(features["start_position"], length, dtype=tf.float32)
        start_states = tf.matmul(gold_start[:, None, :], hidden)                        # [B, 1, H]
        end_logits = _masked(_end_logits(hidden, tf.tile(start_states, [1, length, 1]), initializer_range), allowed)
        end_log_probs = tf.nn.log_softmax(end_logits, -1)
        gold_end = tf.one_hot(features["end_position"], length, dtype=tf.float32)
        loss = -0.5 * tf.reduce_mean(tf.reduce_sum(gold_start * start_log_probs, -1) +
                                     tf.reduce_sum(gold_end * end_log_probs, -1))
        outputs.update(start_log_probs=start_log_probs, end_log_probs=end_log_probs)
    else:
        start_top_log_probs, start_top_index = tf.nn.top_k(start_log_probs, k=START_N_TOP)
        start_states = tf.matmul(tf.one_hot(start_top_index, length, dtype=tf.float32), hidden)  # [B, K, H]
        tiled_hidden = tf.tile(hidden[:, None], [1, START_N_TOP, 1, 1])                           # [B, K, T, H]
        tiled_starts = tf.tile(start_states[:, :, None], [1, 1, length, 1])
        end_logits = _masked(_end_logits(tiled_hidden, tiled_starts, initializer_range), allowed[:, None])
        end_top_log_probs, end_top_index = tf.nn.top_k(tf.nn.log_softmax(end_logits, -1), k=END_N_TOP)
        outputs.update(start_top_log_probs=start_top_log_probs, start_top_index=start_top_index,
                       end_top_log_probs=tf.reshape(end_top_log_probs, [-1, START_N_TOP * END_N_TOP]),
                       end_top_index=tf.reshape(end_top_index, [-1, START_N_TOP * END_N_TOP]))
    with tf.variable_scope("answer_class"):
        start_weighted = tf.matmul(tf.nn.softmax(start_logits, -1)[:, None, :], hidden)[:, 0]
        cls_states = tf.matmul(is_cls[:, None, :], hidden)[:, 0]
        states = _dense(tf.concat([start_weighted, cls_states], -1), int(hidden.shape[-1]), "dense_0",
                        initializer_range, tf.tanh)
        if dropout_rate:
            states = tf.nn.dropout(states, rate=dropout_rate)
        cls_logits = tf.squeeze(_dense(states, 1, "dense_1", initializer_range, use_bias=False), -1)
    outputs["cls_logits"] = cls_logits
    if with_loss:
        no_answer = tf.reduce_sum(tf.one_hot(features["start_position"], length, dtype=tf.float32) * is_cls, -1)
        loss += 0.5 * tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=no_answer, logits=cls_logits))
    return outputs, loss


def build_head(kind, encoder_output, features, num_choices, initializer_range, with_loss, dropout_rate=0.0,
               span_head="linear"):
    """Return (outputs: dict of per-example tensors, loss or None).

    span:        ``span_head`` linear: start_logits, end_logits [B, T]; loss = mean of start and end
                 cross-entropy. xlnet: see xlnet_span_head (it reads ``segment_ids`` from ``features``).
    span_class:  + class_logits [B, 4] from the pooled output; loss adds the class cross-entropy weighted by
                 ``class_weight`` (0 where a window cannot know the class).
    choice:      choice_logits [B, C] from the pooled output of each (passage, choice) sequence; padded
                 choices (``choice_mask`` 0) get -1e9 and are never chosen; loss = cross-entropy over choices.
    """
    if kind not in HEAD_KINDS:
        raise ValueError("unknown head %r" % kind)
    if span_head not in SPAN_HEADS:
        raise ValueError("unknown span head %r" % span_head)
    outputs, loss = {}, None
    pooled = encoder_output.pooled_output
    if dropout_rate:  # google BERT's run_classifier drops out the pooled output before its classifier
        pooled = tf.nn.dropout(pooled, rate=dropout_rate)
    if kind in ("span", "span_class") and span_head == "xlnet":
        outputs, loss = xlnet_span_head(encoder_output.sequence_output, features, initializer_range, with_loss,
                                        dropout_rate)
    elif kind in ("span", "span_class"):
        start_logits, end_logits = span_logits(encoder_output.sequence_output, initializer_range)
        outputs.update(start_logits=start_logits, end_logits=end_logits)
        if with_loss:
            loss = 0.5 * (_cross_entropy(start_logits, features["start_position"]) +
                          _cross_entropy(end_logits, features["end_position"]))
    if kind == "span_class":  # CJRC's class head reads the encoder's own <cls> summary, whatever the span head
        class_logits = _output_layer(pooled, "cls/answer_class", NUM_ANSWER_CLASSES, initializer_range)
        outputs["class_logits"] = class_logits
        if with_loss:
            loss += _cross_entropy(class_logits, features["answer_class"], features["class_weight"])
    if kind == "choice":
        scores = tf.reshape(_output_layer(pooled, "cls/multiple_choice", 1,
                                          initializer_range), [-1, num_choices])
        mask = tf.cast(features["choice_mask"], scores.dtype)
        choice_logits = scores * mask + (1.0 - mask) * -1e9
        outputs["choice_logits"] = choice_logits
        if with_loss:
            loss = _cross_entropy(choice_logits, features["label"])
    return outputs, loss
