"""A frozen graph plus its sidecar, answering questions with the task's own featurize and postprocess."""
import collections
import json
import os
import tempfile
import time

import numpy as np

from serving_demo import questions
from tf_mrc.errors import UserError, first_line


class FrozenModel:
    """Load ``model.pb`` and ``model.pb.json``; ``answer`` questions about passages."""

    def __init__(self, pb_path, batch_size=8):
        from tf_mrc.compat import tf
        from tf_mrc.tasks import FeatureSettings, get_task
        from tf_mrc.tokenization import load_tokenizer
        sidecar_path = pb_path + ".json"
        try:
            with open(sidecar_path, encoding="utf-8") as f:
                self.sidecar = json.load(f)
        except FileNotFoundError:
            raise UserError("%s not found: export the graph with python -m export.to_pb, which writes it" %
                            sidecar_path)
        except (OSError, ValueError) as err:
            raise UserError("%s cannot be read: %s" % (sidecar_path, err))
        sidecar = self.sidecar
        self.task = get_task(sidecar["task"], questions.serving_options(sidecar.get("task_options")))
        directory = os.path.dirname(os.path.abspath(pb_path))
        files = {key: os.path.join(directory, sidecar[key]) if sidecar.get(key) else None
                 for key in ("vocab_file", "spm_model")}
        if not any(files.values()):
            raise UserError("%s records no vocabulary: export with --output_dir, or with --vocab_file (bert, albert) "
                            "or --spm_model (xlnet)" % sidecar_path)
        self.tokenizer = load_tokenizer(sidecar["layout"], files["vocab_file"], files["spm_model"],
                                        sidecar["lower_case"])
        self.settings = FeatureSettings(**sidecar["feature_settings"])
        self.batch_size = batch_size
        graph = tf.Graph()
        with graph.as_default():
            graph_def = tf.GraphDef()
            try:
                with open(pb_path, "rb") as f:
                    graph_def.ParseFromString(f.read())
                tf.import_graph_def(graph_def, name="")
                self._inputs = {name: graph.get_tensor_by_name(info["tensor"])
                                for name, info in sidecar["inputs"].items()}
                self._outputs = {name: graph.get_tensor_by_name(info["tensor"])
                                 for name, info in sidecar["outputs"].items()}
            except Exception as err:  # OSError, protobuf's DecodeError, ValueError / KeyError from a damaged graph
                raise UserError("cannot load frozen graph %s (truncated or corrupted?): %s"
                                % (pb_path, first_line(err)))
        self._session = tf.Session(graph=graph)
        self.run([{name: np.zeros(info["shape"][1:], np.int32) for name, info in sidecar["inputs"].items()}])

    def run_batch(self, arrays):
        """Per-feature output dicts for featurized ``arrays`` in one model run (the session is thread-safe:
        the server's batcher calls this from its own thread)."""
        feed = {tensor: np.asarray([features[name] for features in arrays], np.int32)
                for name, tensor in self._inputs.items()}
        results = self._session.run(self._outputs, feed)
        return [{name: value[i] for name, value in results.items()} for i in range(len(arrays))]

    def run(self, arrays):
        """Per-feature output dicts for featurized ``arrays``, in order, ``batch_size`` features per run.
        (The constructor runs one all-padding feature first, so reported latencies exclude graph warm-up.)"""
        outputs = []
        for start in range(0, len(arrays), self.batch_size):
            outputs.extend(self.run_batch(arrays[start:start + self.batch_size]))
        return outputs

    def predict_examples(self, examples, run=None, check_features=None):
        """(predictions {qid: answer}, nbest {qid: [candidates]}, timings in ms with the feature count and the
        windows of each example). ``run`` replaces ``self.run`` (the server's dynamic batcher);
        ``check_features(featurized)`` may refuse the features before the model sees them."""
        started = time.perf_counter()
        featurized = self.task.featurize(examples, self.tokenizer, self.settings, is_training=False)
        if check_features is not None:
            check_features(featurized)
        featurized_at = time.perf_counter()
        outputs = (run or self.run)(featurized.arrays)
        ran_at = time.perf_counter()
        predictions, nbest = self.task.postprocess(examples, featurized.sidecar, outputs, self.settings)
        done = time.perf_counter()
        windows = collections.Counter(record["example_index"] for record in featurized.sidecar)
        timings = {"featurize_ms": 1e3 * (featurized_at - started), "model_ms": 1e3 * (ran_at - featurized_at),
                   "postprocess_ms": 1e3 * (done - ran_at), "features": len(featurized.arrays),
                   "windows": [windows[i] for i in range(len(examples))]}
        return predictions, nbest, timings

    def predict_file(self, path):
        """Answer every question of a task file (the format --predict_file takes)."""
        return self.predict_examples(self.task.read_examples(path, is_training=False))

    def answer(self, items, run=None, check_features=None):
        """Answer request items (serving_demo.questions): one result dict per item, in order.

        The items go through the task's own reader (as a file in its format), so DRCD's conversion and every
        check of ``--predict_file`` apply; a reader's complaint names the request, not the temporary file."""
        handle, path = tempfile.mkstemp(prefix="serving_demo_", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                qids = questions.write_task_file(self.task, items, f)
            started = time.perf_counter()
            try:
                examples = self.task.read_examples(path, is_training=False)
            except UserError as err:
                raise UserError(str(err).replace(path, "request"))
            predictions, nbest, timings = self.predict_examples(examples, run, check_features)
            latency = 1e3 * (time.perf_counter() - started)
        finally:
            os.remove(path)
        results = []
        for index, (qid, item) in enumerate(zip(qids, items)):
            result = questions.result(self.task, item, qid, predictions.get(qid, ""), nbest.get(qid) or [])
            result.update(latency_ms=round(latency, 2), windows=timings["windows"][index])
            results.append(result)
        return results
