"""The tokenizer interface: ids with character offsets, and how an encoder family packs its inputs.

Every tokenizer maps text to ids plus ``(start, end)`` character offsets into that same text, so answers are
always cut from the original passage, never rebuilt from word pieces. ``pack`` lays out a sequence of parts
the way the encoder was pre-trained (BERT: ``[CLS] a [SEP] b [SEP]`` right-padded; XLNet:
``a <sep> b <sep> <cls>`` left-padded), so tasks featurize once for every encoder.
"""
import collections
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
    passage_first = False  # span windows as ``passage, question`` (XLNet's run_squad) or ``question, passage``

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
