"""XLNet layout (zihangdai/xlnet) as fine-tuned: Chinese XLNet-mid/base, variables under ``model/`` as published.

Fine-tuning runs XLNet's content stream only: no memory, no permutation, no query stream, bidirectional
attention over the whole input. What sets it apart from BERT:
  * no absolute positions: every layer scores query i against key j with content (``r_w_bias``), relative-
    position (sinusoids of i - j, ``r_r_bias``) and relative-segment (same/different, ``r_s_bias``,
    ``seg_embed``) terms; segment ids are only ever compared, so any integer values work;
  * the summary token <cls> comes LAST, and inputs are left-padded so that it sits at position T - 1;
  * the tokenizer is SentencePiece after XLNet's ``preprocess_text`` (tf_mrc.tokenization.sentencepiece).

Published variable names (``model/transformer/...``; L layers, N heads of D, H = d_model; with untie_r the
biases get a leading [L]): ``word_embedding/lookup_table`` [V, H], ``r_w_bias`` ``r_r_bias`` ``r_s_bias``
[L?, N, D], ``seg_embed`` [L, 2, N, D], ``layer_i/rel_attn/{q,k,v,o,r}/kernel`` [H, N, D],
``layer_i/rel_attn/LayerNorm/{beta,gamma}``, ``layer_i/ff/layer_{1,2}/{kernel,bias}``, ``layer_i/ff/LayerNorm/*``;
the fine-tuning summary ``model/sequnece_summary/summary/{kernel,bias}`` (sic, XLNet's spelling). Pre-trained
checkpoints also hold ``model/transformer/mask_emb/mask_emb`` and ``model/lm_loss/bias``: pre-training objects
that fine-tuning never creates, so they are left in the checkpoint; pre-trained checkpoints lack the summary,
which then starts from the initializer, as in XLNet's run_classifier.
"""
import math

from tf_mrc import ops
from tf_mrc.compat import tf
from tf_mrc.modeling import EncoderOutput, layers
from tf_mrc.modeling.layouts import XLNET


def encode(config, input_ids, input_mask, segment_ids, is_training, kernels="fused", compute_dtype="float32",
           attention_dropout_placement="probs", recompute=False):
    """XLNet content stream over [B, T] inputs -> EncoderOutput (see tf_mrc.modeling).

    input_mask follows our convention (1 = real token); XLNet's own (float, 1 = padding) is derived inside.
    pooled_output is XLNet's sequence summary (summary_type 'last', use_proj): tanh(dense(h[:, -1])), without
    the summary's dropout, which the task heads apply like they do to BERT's pooler. New weights start from
    XLNet's initializer (init 'normal', not BERT's truncated normal).
    """
    if recompute and is_training:
        raise ValueError("--recompute supports the bert and albert layouts, not xlnet")
    settings = layers.make_settings(config, is_training, kernels, compute_dtype,
                                    tf.random_normal_initializer(stddev=config.initializer_range),
                                    attention_dropout_placement=attention_dropout_placement)
    with tf.variable_scope("model"):
        with tf.variable_scope("transformer"):
            hidden = _transformer(config, settings, input_ids, input_mask, segment_ids)
    with tf.variable_scope(XLNET.pooled_scope + "summary"):  # model/sequnece_summary (sic, as published)
        pooled = layers.dense(hidden[:, -1, :], config.hidden_size, settings, tf.tanh)
    return EncoderOutput(sequence_output=layers.cast(hidden, tf.float32), pooled_output=layers.cast(pooled, tf.float32))


def _transformer(config, settings, input_ids, input_mask, segment_ids):
    """modeling.transformer_xl with attn_type 'bi', bi_data False, no mems, inp_q None: [B, T, H]."""
    n_layer, n_head, d_head = config.num_hidden_layers, config.num_attention_heads, config.head_size
    seq_length = layers.shape_list(input_ids)[1]
    bias_shape = [n_layer, n_head, d_head] if config.untie_r else [n_head, d_head]
    r_w_bias = layers.weight("r_w_bias", bias_shape, settings)
    r_r_bias = layers.weight("r_r_bias", bias_shape, settings)
    r_s_bias = layers.weight("r_s_bias", bias_shape, settings)
    seg_embed = layers.weight("seg_embed", [n_layer, 2, n_head, d_head], settings)
    with tf.variable_scope("word_embedding"):
        table = layers.variable("lookup_table", [config.vocab_size, config.hidden_size], settings)
    hidden = settings.dropout_fn(layers.cast(tf.gather(table, input_ids), settings.dtype), settings.hidden_dropout)

    # XLNet's non_tgt_mask: a query sees every real key and always itself (so padding rows stay defined).
    attend = tf.maximum(tf.cast(input_mask, tf.float32)[:, None, :], tf.eye(seq_length)[None])  # [B, T, T]
    different_segment = layers.cast(tf.not_equal(segment_ids[:, :, None], segment_ids[:, None, :]), settings.dtype)
    positions = _relative_positions(seq_length, config.hidden_size, config.clamp_len)
    positions = layers.cast(settings.dropout_fn(positions, settings.hidden_dropout), settings.dtype)

    for index in range(n_layer):
        def per_layer(bias):
            return bias[index] if config.untie_r else bias
        with tf.variable_scope("layer_%d" % index):
            with tf.variable_scope("rel_attn"):
                hidden = _relative_attention(hidden, positions, attend, different_segment, per_layer(r_w_bias),
                                             per_layer(r_r_bias), per_layer(r_s_bias), seg_embed[index],
                                             config, settings)
            with tf.variable_scope("ff"):
                hidden = _feed_forward(hidden, config, settings)
    return settings.dropout_fn(hidden, settings.hidden_dropout)


def _relative_positions(seq_length, d_model, clamp_len):
    """Sinusoids of the relative distances T, T-1, ..., 1-T (XLNet's 'bi' span, klen = qlen = T): [2T, H] fp32."""
    inv_freq = 1.0 / (10000.0 ** (tf.range(0, d_model, 2.0) / d_model))
    length = tf.cast(seq_length, tf.float32)
    distances = tf.range(length, -length, -1.0)
    if clamp_len > 0:
        distances = tf.clip_by_value(distances, -float(clamp_len), float(clamp_len))
    angles = distances[:, None] * inv_freq[None, :]
    return tf.concat([tf.sin(angles), tf.cos(angles)], -1)


def _relative_attention(hidden, positions, attend, different_segment, r_w_bias, r_r_bias, r_s_bias, seg_embed,
                        config, settings):
    """XLNet's rel_multihead_attn + post_attention, batch-major: scores [B, N, Tq, Tk]."""
    d_model, n_head, d_head = config.hidden_size, config.num_attention_heads, config.head_size

    def kernel(name):
        return layers.weight(name + "/kernel", [d_model, n_head, d_head], settings)

    query = tf.einsum("bih,hnd->bind", hidden, kernel("q"))
    key = tf.einsum("bjh,hnd->bjnd", hidden, kernel("k"))
    value = tf.einsum("bjh,hnd->bjnd", hidden, kernel("v"))
    position_key = tf.einsum("ph,hnd->pnd", positions, kernel("r"))

    content = tf.einsum("bind,bjnd->bnij", query + r_w_bias, key)
    position = _relative_shift(tf.einsum("bind,pnd->bnip", query + r_r_bias, position_key),
                               layers.shape_list(key)[1])
    segment = tf.einsum("bind,snd->bnis", query + r_s_bias, seg_embed)  # s: 0 same segment, 1 different
    different = different_segment[:, None, :, :]
    segment = (1.0 - different) * segment[:, :, :, 0:1] + different * segment[:, :, :, 1:2]

    scores = layers.cast(content + position + segment, tf.float32)
    # XLNet masks with -1e30, masked_softmax with -10000: in fp32 both give exactly 0 after exp (every row has
    # at least its own position), and -10000 also survives fp16.
    probs = ops.masked_softmax(scores, attend, 1.0 / math.sqrt(float(d_head)), settings.kernels)
    probs = layers.attention_dropout(layers.cast(probs, settings.dtype), "probs", settings)
    attended = layers.attention_dropout(tf.einsum("bnij,bjnd->bind", probs, value), "context", settings)
    output = settings.dropout_fn(tf.einsum("bind,hnd->bih", attended, kernel("o")), settings.hidden_dropout)
    with tf.variable_scope("LayerNorm"):
        return layers.layer_norm(output + hidden, settings)


def _relative_shift(scores, key_length):
    """[B, N, Tq, 2T] scores against distances T..1-T -> [B, N, Tq, Tk] with column j at distance i - j."""
    batch, heads, queries, distances = layers.shape_list(scores)
    scores = tf.reshape(scores, [batch, heads, distances, queries])[:, :, 1:, :]
    return tf.reshape(scores, [batch, heads, queries, distances - 1])[:, :, :, :key_length]


def _feed_forward(hidden, config, settings):
    """XLNet's positionwise_ffn: LN(x + drop(W2 drop(act(W1 x))))."""
    with tf.variable_scope("layer_1"):
        inner = layers.dense(hidden, config.intermediate_size, settings, layers.hidden_activation(settings))
    with tf.variable_scope("layer_2"):
        output = layers.dense(settings.dropout_fn(inner, settings.hidden_dropout), config.hidden_size, settings)
    with tf.variable_scope("LayerNorm"):
        return layers.layer_norm(settings.dropout_fn(output, settings.hidden_dropout) + hidden, settings)
