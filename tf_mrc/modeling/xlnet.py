"""XLNet layout (zihangdai/xlnet) as fine-tuned: Chinese XLNet-mid/base, variables under ``model/`` as published.

Fine-tuning runs XLNet's content stream only: no memory, no permutation, no query stream, bidirectional
attention over the whole input. What sets it apart from BERT:
  * no absolute positions: every layer scores query i against key j with content (``r_w_bias``), relative-
    position (sinusoids of i - j, ``r_r_bias``) and relative-segment (same/different, ``r_s_bias``,
    ``seg_embed``) terms; segment ids are only ever compared, so any integer values work;
  * the summary token <cls> comes LAST, and inputs are left-padded so that it sits at position T - 1;
  * the tokenizer is SentencePiece after XLNet's ``preprocess_text``.

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
import os
import unicodedata

from tf_mrc import ops
from tf_mrc.compat import tf
from tf_mrc.modeling import EncoderOutput, layers
from tf_mrc.tokenization import PackedInput, Tokenizer, TokenizerError, file_fingerprint


# ----------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------

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
        with tf.variable_scope("sequnece_summary/summary"):  # sic: the published scope name
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
    hidden = layers.dropout(layers.cast(tf.gather(table, input_ids), settings.dtype), settings.hidden_dropout)

    # XLNet's non_tgt_mask: a query sees every real key and always itself (so padding rows stay defined).
    attend = tf.maximum(tf.cast(input_mask, tf.float32)[:, None, :], tf.eye(seq_length)[None])  # [B, T, T]
    different_segment = layers.cast(tf.not_equal(segment_ids[:, :, None], segment_ids[:, None, :]), settings.dtype)
    positions = _relative_positions(seq_length, config.hidden_size, config.clamp_len)
    positions = layers.cast(layers.dropout(positions, settings.hidden_dropout), settings.dtype)

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
    return layers.dropout(hidden, settings.hidden_dropout)


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
    probs = ops.attention_dropout(layers.cast(probs, settings.dtype), settings.attention_dropout, "probs",
                                  settings.attention_dropout_placement)
    attended = ops.attention_dropout(tf.einsum("bnij,bjnd->bind", probs, value), settings.attention_dropout,
                                     "context", settings.attention_dropout_placement)
    output = layers.dropout(tf.einsum("bind,hnd->bih", attended, kernel("o")), settings.hidden_dropout)
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
        output = layers.dense(layers.dropout(inner, settings.hidden_dropout), config.hidden_size, settings)
    with tf.variable_scope("LayerNorm"):
        return layers.layer_norm(layers.dropout(output, settings.hidden_dropout) + hidden, settings)


# ----------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------

SPIECE_UNDERLINE = u"\u2581"
SEG_ID_CLS = 2  # XLNet's segment id of <cls>; parts use 0 (A) and 1 (B), each <sep> that of its part
SEG_ID_PAD = 3  # run_squad.py's and transformers' (classifier_utils.py uses 4): padding only needs its own id


def preprocess_text(text, lower_case):
    """XLNet's prepro_utils.preprocess_text (remove_space, keep_accents=False), character by character.

    Returns (prepared, spans): ``spans[k]`` is the (start, end) of ``text`` that prepared character k came from.
    Steps, as XLNet: whitespace runs -> one space and ends stripped; `` and '' -> "; NFKD with combining marks
    dropped (full-width forms become ASCII, accents go); lower-casing if asked.
    """
    collapsed = []  # (char, start, end)
    run_start = None
    for index, char in enumerate(text):
        if char.isspace():
            if run_start is None:
                run_start = index
            continue
        if run_start is not None and collapsed:
            collapsed.append((" ", run_start, index))
        run_start = None
        collapsed.append((char, index, index + 1))

    quoted = []
    index = 0
    while index < len(collapsed):
        char, start, end = collapsed[index]
        if char in "`'" and index + 1 < len(collapsed) and collapsed[index + 1][0] == char:
            quoted.append(('"', start, collapsed[index + 1][2]))
            index += 2
        else:
            quoted.append((char, start, end))
            index += 1

    prepared, spans = [], []
    for char, start, end in quoted:
        for part in unicodedata.normalize("NFKD", char):
            if unicodedata.combining(part):
                continue
            for out in (part.lower() if lower_case else part):
                prepared.append(out)
                spans.append((start, end))
    return "".join(prepared), spans


class SentencePieceTokenizer(Tokenizer):
    """XLNet's SentencePiece tokenization (preprocess_text + encode_ids) with character offsets.

    Offsets come from SentencePiece's own alignment (piece begin/end on its input) mapped back through
    ``preprocess_text``, so each piece covers the original characters it was made from (full-width,
    upper-case, accented and doubled-space text included). A piece's leading '▁' stands for the space before
    it and is not part of its span; a piece that is only '▁' gets an empty span at the next character.

    ``lower_case``: XLNet's --uncased. Chinese XLNet-mid/base were pre-trained and fine-tuned cased
    (spiece 'sp10m.cased.v3', --uncased=False throughout ymcui/Chinese-XLNet), hence the default.
    """

    def __init__(self, spm_model, lower_case=False):
        import sentencepiece
        if not os.path.isfile(spm_model):
            raise TokenizerError("SentencePiece model not found: %s" % spm_model)
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.Load(spm_model)
        except (RuntimeError, OSError) as err:
            raise TokenizerError("%s is not a SentencePiece model (%s)" % (spm_model, str(err).splitlines()[0]))
        from sentencepiece import sentencepiece_pb2
        self._proto = sentencepiece_pb2.SentencePieceText
        self.lower_case = lower_case
        special = [self._sp.PieceToId(piece) for piece in ("<cls>", "<sep>", "<pad>")]
        if self._sp.unk_id() in special:
            raise TokenizerError("SentencePiece model %s lacks <cls>/<sep>/<pad>: not an XLNet vocabulary"
                                 % spm_model)
        self.cls_id, self.sep_id, self.pad_id = special
        # <mask> is in every XLNet vocabulary (id 6) though pre-training never fed it (the permutation LM
        # masks through the query stream); CHID's blanks use it as a marker that fine-tuning learns.
        self.unk_id, self.mask_id = self._sp.unk_id(), self._sp.PieceToId("<mask>")
        self.fingerprint = "spm-%s-%d" % (file_fingerprint(spm_model), int(lower_case))

    @property
    def vocab_size(self):
        return self._sp.GetPieceSize()

    def encode(self, text):
        prepared, spans = preprocess_text(text, self.lower_case)
        ids, offsets = [], []
        for piece_id, begin, end in self._encode_prepared(prepared):
            while begin < end and prepared[begin].isspace():  # the '▁' part stands for the space before
                begin += 1
            if begin == end:
                position = spans[begin][0] if begin < len(spans) else len(text)
                offsets.append((position, position))
            else:
                offsets.append((spans[begin][0], spans[end - 1][1]))
            ids.append(piece_id)
        return ids, offsets

    def _pieces(self, text):
        """SentencePiece's pieces of ``text`` as (piece, id, begin, end) with character positions."""
        proto = self._proto.FromString(self._sp.encode(text, out_type="serialized_proto"))
        char_at_byte = {}
        position = 0
        for index, char in enumerate(text):
            char_at_byte[position] = index
            position += len(char.encode("utf-8"))
        char_at_byte[position] = len(text)
        return [(piece.piece, piece.id, char_at_byte[piece.begin], char_at_byte[piece.end])
                for piece in proto.pieces]

    def _encode_prepared(self, prepared):
        """XLNet's encode_pieces + PieceToId, as (id, begin, end) over ``prepared``.

        XLNet re-splits any piece ending in digit + ',' (e.g. '▁2019,') into the pieces of the digits and a
        separate ','; the re-split pieces are placed inside the original piece's span, before its ','.
        """
        result = []
        for piece, piece_id, begin, end in self._pieces(prepared):
            if not (len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit()):
                result.append((piece_id, begin, end))
                continue
            body = piece[:-1].replace(SPIECE_UNDERLINE, "")
            comma = end - 1
            body_start = max(begin, comma - len(body))
            sub_pieces = self._pieces(body)
            if piece[0] != SPIECE_UNDERLINE and sub_pieces[0][0].startswith(SPIECE_UNDERLINE):
                first, _, sub_begin, sub_end = sub_pieces.pop(0)
                if len(first) > 1:
                    sub_pieces.insert(0, (first[1:], None, sub_begin, sub_end))
            for sub_piece, _, sub_begin, sub_end in sub_pieces:
                result.append((self._sp.PieceToId(sub_piece), min(body_start + sub_begin, comma),
                               min(body_start + sub_end, comma)))
            result.append((self._sp.PieceToId(","), comma, end))
        return result

    def pack(self, parts, type_ids, max_length):
        """XLNet's layout ``A <sep> B <sep> <cls>``, left-padded so <cls> is always at max_length - 1."""
        if len(parts) != len(type_ids):
            raise ValueError("pack got %d parts but %d type ids" % (len(parts), len(type_ids)))
        ids, segments, starts = [], [], []
        for part, type_id in zip(parts, type_ids):
            if type_id not in (0, 1):
                raise ValueError("XLNet segment ids of parts are 0 (A) or 1 (B), got %r" % (type_id,))
            starts.append(len(ids))
            ids.extend(part)
            ids.append(self.sep_id)
            segments.extend([type_id] * (len(part) + 1))
        ids.append(self.cls_id)
        segments.append(SEG_ID_CLS)
        if len(ids) > max_length:
            raise ValueError("packed length %d exceeds max_length %d" % (len(ids), max_length))
        pad = max_length - len(ids)
        return PackedInput([self.pad_id] * pad + ids, [0] * pad + [1] * len(ids), [SEG_ID_PAD] * pad + segments,
                           [start + pad for start in starts], max_length - 1)
