"""The Task interface: everything that differs between CMRC 2018, DRCD, CJRC, CHID and C3.

A task turns its files into examples, examples into fixed-shape features (and a sidecar that maps features
back to examples and characters), model outputs back into answers, and answers into its official metric.
Training, caching, Horovod, export and the serving demo call only these methods, so one code path serves
every task and every encoder.
"""
import collections
import dataclasses
import json
import re
import unicodedata

import numpy as np

from tf_mrc.errors import UserError
from tf_mrc.options import RunSpec


class DataError(UserError):
    """Bad task data. The message is one line naming the file, the record and the field."""

    def __init__(self, path, record, field, problem):
        super().__init__("%s: record %s: field %r: %s" % (path, record, field, problem))


@dataclasses.dataclass
class FeatureSettings:
    """Everything featurization depends on; part of the feature-cache key. Defaults: the run options'."""
    max_seq_length: int = 512
    doc_stride: int = RunSpec.doc_stride
    max_query_length: int = RunSpec.max_query_length
    max_answer_length: int = RunSpec.max_answer_length
    n_best_size: int = RunSpec.n_best_size

    def key(self):
        return "s%d-d%d-q%d" % (self.max_seq_length, self.doc_stride, self.max_query_length)


@dataclasses.dataclass(frozen=True)
class TaskOption:
    """One option a task reads, declared once: every command builds its flag and check from it."""
    name: str
    kind: type                 # str | int | float
    default: object
    help: str
    choices: tuple = ()

    def check(self, task, value):
        """``value`` if it is of this option's kind and among its choices, else a UserError naming the flag."""
        if value is None:
            return value
        numeric = self.kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (numeric or isinstance(value, self.kind)):
            raise UserError("%s: --%s must be a %s, got %r" % (task, self.name, self.kind.__name__, value))
        if self.choices and value not in self.choices:
            raise UserError("%s: --%s must be one of %s, got %r" % (task, self.name, "|".join(self.choices), value))
        return value


@dataclasses.dataclass
class Featurized:
    """Features as parallel lists: ``arrays[i]`` is a dict of fixed-shape int lists (model inputs and labels)
    and ``sidecar[i]`` the JSON-able record that ties feature i back to its example (not fed to the model)."""
    arrays: list
    sidecar: list
    stats: dict = dataclasses.field(default_factory=dict)   # e.g. {"truncated": n}, reported by the audit


def log_softmax(logits):
    """Log-probabilities of a vector of logits, computed in float64."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - np.max(shifted)
    return shifted - np.log(np.sum(np.exp(shifted)))


def softmax(logits):
    return np.exp(log_softmax(logits))


def _unreadable(path, err):
    """The DataError for a file that cannot be opened or decoded."""
    if isinstance(err, FileNotFoundError):
        return DataError(path, "-", "-", "file not found")
    if isinstance(err, IsADirectoryError):
        return DataError(path, "-", "-", "a directory, not a file")
    if isinstance(err, UnicodeDecodeError):
        return DataError(path, "-", "-", "not UTF-8 text (%s)" % err)
    return DataError(path, "-", "-", "cannot be read (%s)" % (err.strerror or type(err).__name__))


# Files are UTF-8; a leading byte-order mark (Windows editors write one) is read as UTF-8 and dropped.
ENCODING = "utf-8-sig"

# A JSON \\uD800-\\uDFFF escape: the only way a lone surrogate (not Unicode text) gets into a parsed string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _json_path(record, key):
    """'data[0].context'-style path of ``key`` inside ``record`` ('-' is the top level)."""
    step = "[%d]" % key if isinstance(key, int) else ".%s" % key
    return (step.lstrip(".") if record == "-" else record + step) if key is not None else record


def _first_lone_surrogate(value, record, field):
    """(record, field) of the first string in ``value`` (at ``record``/``field``) holding a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return record, field
        return None
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in children:
        found = _first_lone_surrogate(item, _json_path(record, field), key)
        if found:
            return found
    return None


def check_text(path, record, value, raw):
    """``value``, or a DataError for a lone surrogate escape: such a string is not Unicode text, cannot be
    tokenized and cannot be written back as UTF-8."""
    if _SURROGATE_ESCAPE.search(raw):
        found = _first_lone_surrogate(value, record, None)
        if found:
            raise DataError(path, found[0], found[1], "a lone surrogate escape (\\uD800-\\uDFFF): not Unicode text")
    return value


def text_lines(path):
    """The lines of a UTF-8 text file, read as a stream; the usual failures become one-line DataErrors."""
    try:
        with open(path, encoding=ENCODING) as f:
            for line in f:
                yield line
    except (OSError, UnicodeDecodeError) as err:
        raise _unreadable(path, err)


def load_json(path):
    """Read a JSON file, turning the usual failures into one-line DataErrors."""
    try:
        with open(path, encoding=ENCODING) as f:
            raw = f.read()
        return check_text(path, "-", json.loads(raw), raw)
    except json.JSONDecodeError as err:
        raise DataError(path, "-", "-", "not valid JSON (%s)" % err)
    except (OSError, UnicodeDecodeError) as err:
        raise _unreadable(path, err)
    except RecursionError:
        raise DataError(path, "-", "-", "JSON nested too deeply")


def iter_json_lines(path):
    """(line number, record) for each non-blank line of a JSON-lines file, read as a stream; a bad line is a
    DataError naming its line number."""
    for number, line in enumerate(text_lines(path), 1):
        if line.strip():
            try:
                yield number, check_text(path, "line %d" % number, json.loads(line), line)
            except json.JSONDecodeError as err:
                raise DataError(path, "line %d" % number, "-", "not valid JSON (%s)" % err)


def load_json_lines(path):
    """Read JSON lines; blank lines are skipped, a bad line is a DataError naming its line number."""
    return [record for _, record in iter_json_lines(path)]


def is_blank(text):
    """Whether ``text`` shows nothing: only whitespace, zero-width and other format or control characters
    (U+200B, U+FEFF, ...). Such a passage tokenizes to nothing, so it is an empty passage."""
    return all(char.isspace() or unicodedata.category(char) in ("Cf", "Cc") for char in text)


def question_id(path, record, value, field="id"):
    """A question id as predictions files key it (a string; 7 and "7" are the same id). Missing, null,
    empty and non-scalar ids are DataErrors: two questions without an id would share one prediction."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(path, record, field, "missing or not a string/integer question id (got %s)"
                        % json.dumps(value))
    qid = str(value).strip()
    if not qid:
        raise DataError(path, record, field, "empty question id")
    return qid


class QuestionIds:
    """The question ids read so far (over one or several files): a second question with the same id would
    overwrite the first one's prediction, so it is a DataError naming both records."""

    def __init__(self):
        self._where = {}

    def add(self, qid, path, record, field="id"):
        if qid in self._where:
            first_path, first_record = self._where[qid]
            first = first_record if first_path == path else "%s in %s" % (first_record, first_path)
            raise DataError(path, record, field, "question id %s is also the id of record %s" % (qid, first))
        self._where[qid] = (path, record)
        return qid


class Task:
    """One reading-comprehension task. Subclasses set the class attributes and implement the methods."""

    name = ""
    head = ""            # 'span' | 'span_class' | 'choice': which head the model_fn builds
    metric_names = ()    # the keys of evaluate()'s result that the results table reports, headline first
    default_max_seq_length = 512
    default_files = {}   # role ('train' | 'dev' | 'predict') -> file name inside --data_dir
    declared_options = ()   # the TaskOptions this task reads; the commands turn them into flags

    def __init__(self, options=None):
        """``options``: {name: value} of this task's declared options; the others take their defaults."""
        declared = {option.name: option for option in self.declared_options}
        unknown = sorted(set(options or {}) - set(declared))
        if unknown:
            raise UserError("--%s is not an option of task %s (its options: %s)" % (
                unknown[0], self.name, ", ".join("--" + name for name in declared) or "none"))
        self.options = {name: option.check(self.name, (options or {}).get(name, option.default))
                        for name, option in declared.items()}

    @classmethod
    def options_for_file(cls, options, path):
        """The options for reading ``path``, a file the user named (``tf_mrc.evaluate``, ``tf_mrc.audit``)."""
        return options

    # -- data ---------------------------------------------------------------------------------------
    def read_examples(self, path, is_training):
        """Parse a task file into a list of examples. Bad records raise DataError; nothing is dropped silently.
        A task implements this or ``iter_examples``: each defaults to the other."""
        return list(self.iter_examples(path, is_training))

    def iter_examples(self, path, is_training):
        """The examples of ``read_examples``, one at a time. Tasks whose files can be read as a stream implement
        this instead, so that featurizing a large corpus never holds all of its examples."""
        return iter(self.read_examples(path, is_training))

    def source_files(self, path):
        """Every file ``read_examples(path)`` reads (answer maps, sibling subsets): feature caches hash them all."""
        return [path]

    def cache_identity(self):
        """What besides files and settings decides this task's features (its options, by default)."""
        return dict(self.options)

    def check_settings(self, settings, tokenizer):
        """Raise UserError when ``settings`` cannot hold this task's inputs (checked once, before any work)."""

    def iter_features(self, examples, tokenizer, settings, is_training, stats, first_index=0):
        """Yield (arrays, sidecar record) for each feature of ``examples`` (any iterable), in order (see
        Featurized); example indices count from ``first_index``, so a slice of a file featurizes exactly as
        it does within the whole file. What it notices (truncated, unaligned, ...) is counted in ``stats``, a
        Counter. Training features carry labels; all carry ``example_index``."""
        raise NotImplementedError

    def featurize(self, examples, tokenizer, settings, is_training):
        """Featurized for a list of ``examples``, in memory (the feature cache streams them instead)."""
        arrays, sidecar, stats = [], [], collections.Counter()
        for features, record in self.iter_features(examples, tokenizer, settings, is_training, stats):
            arrays.append(features)
            sidecar.append(record)
        stats["examples"] = len(examples)
        stats["features"] = len(arrays)
        return Featurized(arrays, sidecar, dict(stats))

    def feature_shapes(self, settings):
        """{name: shape} of every int32 array in Featurized.arrays (model inputs and labels)."""
        raise NotImplementedError

    # -- decoding and scoring -------------------------------------------------------------------------
    def postprocess(self, examples, sidecar, outputs, settings):
        """Turn per-feature model outputs (dicts of numpy arrays, in sidecar order) into answers.

        Returns (predictions {question_id: answer}, nbest {question_id: [candidates]}).
        """
        raise NotImplementedError

    def oracle_outputs(self, examples, featurized):
        """Per-feature outputs a perfect model would produce, built from the labels (for the audit)."""
        raise NotImplementedError

    def evaluate(self, examples, predictions):
        """The task's official metric on ``predictions`` ({question_id: answer}); missing ones score 0.
        Every example must have its gold answer (``check_gold``)."""
        raise NotImplementedError

    gold_field = "answers"   # the field that carries an example's gold answer in the task's files

    def has_gold(self, example):
        """Whether ``example`` carries the gold answer scoring needs (test files do not)."""
        raise NotImplementedError

    def check_gold(self, path, examples):
        """Raise a DataError naming the first example of ``path`` without a gold answer."""
        for example in examples:
            if not self.has_gold(example):
                raise DataError(path, "question %s" % example.qid, self.gold_field,
                                "no gold answer to score against (a test file? scoring needs the ground truth)")

    answer_types = (str,)    # what a prediction may be (choice tasks also take a choice index)

    def check_predictions(self, path, examples, predictions):
        """Refuse a prediction (read from ``path``) that no answer of its example could equal; by default any
        string may be an answer."""

    def load_predictions(self, path):
        """Read a predictions file in the formats ``tf_mrc.evaluate`` accepts: by default {id: answer}."""
        predictions = load_json(path)
        if not isinstance(predictions, dict):
            raise DataError(path, "-", "-", "expected a JSON object {question_id: answer}")
        self.check_answers(path, predictions.items())
        return predictions

    def check_answers(self, path, pairs):
        """Refuse predictions files of another shape (n-best files, data files) instead of scoring them."""
        for qid, answer in pairs:
            if isinstance(answer, self.answer_types) and not isinstance(answer, bool):
                continue
            if isinstance(answer, list) and qid in ("data", "paragraphs"):
                problem = "this is a data file, not predictions {question_id: answer}"
            elif isinstance(answer, list):
                problem = "a list of candidates, not an answer: this looks like an n-best file (pass predictions.json)"
            else:
                problem = "expected an answer (%s), got %s" % (
                    " or ".join("integer" if t is int else "string" for t in self.answer_types), json.dumps(answer))
            raise DataError(path, "question %s" % qid, "answer", problem)

    def write_predictions(self, out_dir, prefix, predictions, nbest):
        """Write ``{prefix}predictions.json`` and ``{prefix}nbest_predictions.json`` (tasks may add formats)."""
        import os
        from tf_mrc import outputs
        for name, obj in (("predictions.json", predictions), ("nbest_predictions.json", nbest)):
            outputs.write_json(os.path.join(out_dir, prefix + name), obj)


_REGISTRY = {}


def register(cls):
    """Class decorator of a task module (tf_mrc/tasks/<module>.py): makes the task known to every command."""
    _REGISTRY[cls.name] = cls
    return cls
