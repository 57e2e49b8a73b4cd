"""Tokenizers with character offsets, and how each encoder family packs its inputs.

Every tokenizer maps text to ids plus ``(start, end)`` character offsets into that same text, so answers are
always cut from the original passage, never rebuilt from word pieces. ``pack`` lays out a sequence of parts
the way the encoder was pre-trained (BERT: ``[CLS] a [SEP] b [SEP]`` right-padded; XLNet:
``a <sep> b <sep> <cls>`` left-padded), so tasks featurize once for every encoder.
"""
import collections
import difflib
import hashlib
import os

from tf_mrc.errors import UserError

PackedInput = collections.namedtuple(
    "PackedInput", ["input_ids", "input_mask", "segment_ids", "part_starts", "cls_index"])


class TokenizerError(UserError):
    """A vocabulary or tokenizer model that cannot be used; the message is one line for the user."""


def file_fingerprint(path):
    """A short content hash, used to key feature caches on the vocabulary that made them."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


class Tokenizer:
    """Interface: ``encode`` (ids + character offsets), ``pack`` (the encoder's input layout), ``vocab_size``."""

    fingerprint = ""
    unk_id = None    # the unknown-token id
    mask_id = None   # the masked-LM token ([MASK] / <mask>); cloze tasks (CHID) write blanks with it

    def encode(self, text):
        """Return (ids, offsets): one (start, end) character span of ``text`` per id."""
        raise NotImplementedError

    @property
    def vocab_size(self):
        raise NotImplementedError

    def num_special_tokens(self, num_parts):
        """How many positions ``pack`` adds around ``num_parts`` parts."""
        return num_parts + 1

    def pack(self, parts, type_ids, max_length):
        """Lay ``parts`` (lists of ids) out as one padded sequence of ``max_length``.

        ``type_ids[i]`` is the segment id of part i and its separator. Returns PackedInput with
        ``part_starts[i]`` the position of the first id of part i and ``cls_index`` the summary position.
        """
        raise NotImplementedError


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


def load_tokenizer(layout, vocab_file=None, spm_model=None, lower_case=None):
    """The tokenizer an encoder layout was pre-trained with. ``lower_case`` None means the layout's own
    convention: the Chinese BERT/ALBERT vocabularies are uncased, Chinese XLNet was trained cased."""
    if lower_case is None:
        lower_case = layout != "xlnet"
    if layout == "xlnet":
        from tf_mrc.modeling.xlnet import SentencePieceTokenizer
        if not spm_model:
            raise TokenizerError("--model of layout xlnet needs --spm_model (the checkpoint's spiece.model)")
        return SentencePieceTokenizer(spm_model, lower_case=lower_case)
    if not vocab_file:
        raise TokenizerError("--vocab_file is required for layout %s" % layout)
    return WordPieceTokenizer(vocab_file, lower_case=lower_case)


class ChineseConverter:
    """OpenCC conversion that remembers, for every output character, the input characters it came from.

    OpenCC converts phrase by phrase and a phrase may change length, so a model reading the converted text
    can still report answers as the exact characters of the original.
    """

    def __init__(self, config="t2s"):
        try:
            import opencc
        except ImportError:
            raise TokenizerError("the opencc package is required for this task (pip install opencc, or "
                                 "opencc-python-reimplemented on Python 3.7)")
        # opencc and opencc-python-reimplemented convert a few characters differently (谿/溪): features
        # made by one must not be reused by the other.
        self.identity = "%s-%s-%s" % (opencc.__name__, getattr(opencc, "__version__", "?"), config)
        try:
            self._cc = opencc.OpenCC(config)
        except TypeError:  # opencc-python-reimplemented wants the name without .json in older releases
            self._cc = opencc.OpenCC(config.replace(".json", ""))

    def convert(self, text):
        """Return (converted, spans): ``spans[i]`` is the (start, end) of ``text`` that output char i comes from."""
        out = self._cc.convert(text)
        if len(out) == len(text):
            return out, [(i, i + 1) for i in range(len(text))]
        # Length changed somewhere: align against the character-by-character conversion, which keeps length.
        charwise = "".join(self._cc.convert(ch)[:1] or ch for ch in text)
        spans = [None] * len(out)
        matcher = difflib.SequenceMatcher(None, charwise, out, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                for k in range(j2 - j1):
                    spans[j1 + k] = (i1 + k, i1 + k + 1)
            elif j2 > j1:
                for k in range(j1, j2):
                    spans[k] = (i1, max(i2, i1 + 1) if i1 < len(text) else len(text))
        return out, spans
