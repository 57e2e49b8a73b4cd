"""Build one feature cache, as run_finetune does: in one process, or as one rank of a Horovod job.

    [horovodrun -np 2 -H localhost:2] python tests/featurize_probe.py DATA_FILE VOCAB CACHE_DIR WORKERS

Launched by tests/test_feature_cache.py; prints the cache's index path on rank 0.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tf_mrc import distributed  # noqa: E402
from tf_mrc.data import FeatureCache  # noqa: E402
from tf_mrc.tasks import FeatureSettings, get_task  # noqa: E402
from tf_mrc.tokenization import WordPieceTokenizer  # noqa: E402

SETTINGS = FeatureSettings(max_seq_length=48, doc_stride=16, max_query_length=16)


def build(data_file, vocab, cache_dir, workers, dist, log=print):
    return FeatureCache(cache_dir, get_task("cmrc2018"), data_file, WordPieceTokenizer(vocab), SETTINGS,
                        False, dist, log=log, workers=workers)


if __name__ == "__main__":
    dist = distributed.detect()
    with dist.fail_fast():
        cache = build(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), dist)
        if dist.is_chief:
            print("index: %s" % cache.index_path)
