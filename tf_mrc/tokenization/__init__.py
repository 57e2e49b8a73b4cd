"""Tokenizers with character offsets (WordPiece, XLNet's SentencePiece) and Chinese script conversion.

Imports no TensorFlow: the metric, the audit and the demo's featurization run without it.
"""
from tf_mrc.tokenization.base import PackedInput, Tokenizer, TokenizerError, file_fingerprint
from tf_mrc.tokenization.chinese import ChineseConverter
from tf_mrc.tokenization.sentencepiece import SentencePieceTokenizer, preprocess_text
from tf_mrc.tokenization.wordpiece import WordPieceTokenizer

__all__ = ["PackedInput", "Tokenizer", "TokenizerError", "file_fingerprint", "ChineseConverter",
           "SentencePieceTokenizer", "preprocess_text", "WordPieceTokenizer", "load_tokenizer"]

_TOKENIZERS = {"wordpiece": WordPieceTokenizer, "sentencepiece": SentencePieceTokenizer}


def load_tokenizer(layout, vocab_file=None, spm_model=None, lower_case=None):
    """The tokenizer an encoder layout was pre-trained with, set up for that layout's span-window order.
    ``lower_case`` None means the layout's own convention (the Chinese BERT/ALBERT vocabularies are uncased,
    Chinese XLNet was trained cased)."""
    from tf_mrc.modeling.layouts import descriptor
    layout = descriptor(layout)
    path = {"vocab_file": vocab_file, "spm_model": spm_model}[layout.vocabulary_flag]
    if not path:
        raise TokenizerError("--model of layout %s needs --%s" % (layout.name, layout.vocabulary_flag))
    tokenizer = _TOKENIZERS[layout.tokenizer](path, lower_case=layout.lower_case if lower_case is None
                                              else lower_case)
    if layout.passage_first:
        tokenizer.passage_first = True
        tokenizer.fingerprint += "-passage_first"  # cached span features differ in layout
    return tokenizer
