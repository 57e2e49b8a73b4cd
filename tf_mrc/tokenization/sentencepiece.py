"""XLNet's SentencePiece tokenization (zihangdai/xlnet prepro_utils) with character offsets, packed
``a <sep> b <sep> <cls>`` with left padding so that <cls> is always the last position."""
import os
import unicodedata

from tf_mrc.tokenization.base import PackedInput, Tokenizer, TokenizerError, file_fingerprint

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
