"""Task heads over any encoder's output: span, span + answer class (CJRC), multiple choice.

Weights are stored [out, in] under ``cls/...`` like google BERT's run_squad (``cls/squad/output_weights``),
so SQuAD-style fine-tuned checkpoints load and the PyTorch heads (qa_outputs, classifier) map one to one.
"""
from tf_mrc.compat import tf

HEAD_KINDS = ("span", "span_class", "choice")
NUM_ANSWER_CLASSES = 4  # span | yes | no | unknown


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


def build_head(kind, encoder_output, features, num_choices, initializer_range, with_loss, dropout_rate=0.0):
    """Return (outputs: dict of per-example tensors, loss or None).

    span:        start_logits, end_logits [B, T]; loss = mean of start and end cross-entropy.
    span_class:  + class_logits [B, 4] from the pooled output; loss adds the class cross-entropy weighted by
                 ``class_weight`` (0 where a window cannot know the class).
    choice:      choice_logits [B, C] from the pooled output of each (passage, choice) sequence; padded
                 choices (``choice_mask`` 0) get -1e9 and are never chosen; loss = cross-entropy over choices.
    """
    if kind not in HEAD_KINDS:
        raise ValueError("unknown head %r" % kind)
    outputs, loss = {}, None
    pooled = encoder_output.pooled_output
    if dropout_rate:  # google BERT's run_classifier drops out the pooled output before its classifier
        pooled = tf.nn.dropout(pooled, rate=dropout_rate)
    if kind in ("span", "span_class"):
        start_logits, end_logits = span_logits(encoder_output.sequence_output, initializer_range)
        outputs.update(start_logits=start_logits, end_logits=end_logits)
        if with_loss:
            loss = 0.5 * (_cross_entropy(start_logits, features["start_position"]) +
                          _cross_entropy(end_logits, features["end_position"]))
        if kind == "span_class":
            class_logits = _output_layer(pooled, "cls/answer_class", NUM_ANSWER_CLASSES,
                                         initializer_range)
            outputs["class_logits"] = class_logits
            if with_loss:
                loss += _cross_entropy(class_logits, features["answer_class"], features["class_weight"])
    else:
        scores = tf.reshape(_output_layer(pooled, "cls/multiple_choice", 1,
                                          initializer_range), [-1, num_choices])
        mask = tf.cast(features["choice_mask"], scores.dtype)
        choice_logits = scores * mask + (1.0 - mask) * -1e9
        outputs["choice_logits"] = choice_logits
        if with_loss:
            loss = _cross_entropy(choice_logits, features["label"])
    return outputs, loss
