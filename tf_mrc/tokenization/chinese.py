"""Traditional <-> simplified Chinese conversion (OpenCC) that keeps a map back to the original characters."""
import difflib

from tf_mrc.tokenization.base import TokenizerError


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
