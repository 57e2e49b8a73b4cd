"""BERT's WordPiece (the Chinese BERT/ALBERT vocabularies), packed ``[CLS] a [SEP] b [SEP]`` with right padding."""
import os

from tf_mrc.tokenization.base import PackedInput, Tokenizer, TokenizerError, file_fingerprint


class WordPieceTokenizer(Tokenizer):
    """The BERT WordPiece of the Chinese checkpoints, through the fast ``tokenizers`` implementation.

    Same conventions as google BERT's BasicTokenizer + WordpieceTokenizer: control characters dropped,
    every CJK character its own token, punctuation split, lower-casing with accents stripped when
    ``lower_case`` (the Chinese vocabularies are uncased), pieces longer than 100 characters become [UNK].
    """

    def __init__(self, vocab_file, lower_case=True):
        from tokenizers import BertWordPieceTokenizer
        if not os.path.isfile(vocab_file):
            raise TokenizerError("vocab file not found: %s" % vocab_file)
        try:
            with open(vocab_file, encoding="utf-8") as f:
                self.vocab = [line.rstrip("\n").strip() for line in f]
        except (OSError, UnicodeDecodeError) as err:
            raise TokenizerError("vocab file %s cannot be read as UTF-8 text (%s)"
                                 % (vocab_file, getattr(err, "strerror", None) or err))
        if not self.vocab or any(tok not in self.vocab for tok in ("[CLS]", "[SEP]", "[UNK]", "[PAD]")):
            raise TokenizerError("vocab file %s lacks [PAD]/[UNK]/[CLS]/[SEP]: not a BERT WordPiece vocabulary"
                                 % vocab_file)
        self._fast = BertWordPieceTokenizer(vocab_file, clean_text=True, handle_chinese_chars=True,
                                            strip_accents=None, lowercase=lower_case)
        index = {tok: i for i, tok in enumerate(self.vocab)}
        self.cls_id, self.sep_id, self.pad_id = index["[CLS]"], index["[SEP]"], index["[PAD]"]
        self.unk_id = index["[UNK]"]
        self.mask_id = index.get("[MASK]", self.unk_id)
        self.fingerprint = "wp-%s-%d" % (file_fingerprint(vocab_file), int(lower_case))

    @property
    def vocab_size(self):
        return len(self.vocab)

    def encode(self, text):
        enc = self._fast.encode(text, add_special_tokens=False)
        return list(enc.ids), [tuple(o) for o in enc.offsets]

    def pack(self, parts, type_ids, max_length):
        ids, segments, starts = [self.cls_id], [type_ids[0]], []
        for part, type_id in zip(parts, type_ids):
            starts.append(len(ids))
            ids.extend(part)
            ids.append(self.sep_id)
            segments.extend([type_id] * (len(part) + 1))
        if len(ids) > max_length:
            raise ValueError("packed length %d exceeds max_length %d" % (len(ids), max_length))
        pad = max_length - len(ids)
        mask = [1] * len(ids) + [0] * pad
        return PackedInput(ids + [self.pad_id] * pad, mask, segments + [0] * pad, starts, 0)
