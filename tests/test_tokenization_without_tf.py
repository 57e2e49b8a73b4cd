"""The metric, the audit's featurization and the tokenizers import and run with TensorFlow refused: a fresh
interpreter whose meta-path hook raises ImportError for ``tensorflow`` (and its submodules)."""
import subprocess
import sys

from conftest import ROOT, SPECIAL_TOKENS

BLOCKED = r"""
import sys

class RefuseTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("blocked: " + name)
        return None

sys.meta_path.insert(0, RefuseTensorFlow())
from tf_mrc import metrics
from tf_mrc.tasks import FeatureSettings, get_task
from tf_mrc.tokenization import ChineseConverter, SentencePieceTokenizer, load_tokenizer, preprocess_text  # noqa
from tf_mrc.modeling.layouts import descriptor
assert metrics.cmrc_f1(["北京大学"], "北京") > 0
assert preprocess_text("Ａ  b", False)[0] == "A b"
from tf_mrc.audit import audit
report = audit(get_task("cmrc2018"), sys.argv[1], load_tokenizer("bert", vocab_file=sys.argv[2]),
               FeatureSettings(max_seq_length=64, doc_stride=32, max_query_length=16))
assert report["examples"] > 0 and report["features"] > report["examples"], report
assert descriptor("xlnet").passage_first and not descriptor("bert").passage_first
assert not any(name == "tensorflow" or name.startswith("tensorflow.") for name in sys.modules)
print("ok", report["examples"])
"""


def test_metric_audit_and_tokenizers_run_without_tensorflow(tmp_path):
    from tf_mrc import experiment
    train_file = experiment.embedded_default().train_file
    chars = sorted({char for char in open(train_file, encoding="utf-8").read() if not char.isspace()})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL_TOKENS + chars) + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", BLOCKED, train_file, str(vocab)],
                            capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok ")
