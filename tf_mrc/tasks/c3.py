"""C3: multiple-choice reading comprehension on dialogues (``d``) and mixed-genre texts (``m``).

Files are JSON lists of documents ``[[context sentences], [{"question", "choice": [2..4], "answer"}], id]``.
A path whose name gives its subset (``c3-d-dev.json``, CLUE's ``m-train.json``) stands for that split of every
subset in option ``c3_subsets`` (default ``d,m``): ``c3-d-dev.json`` reads ``c3-d-dev.json`` and
``c3-m-dev.json``; other names (CLUE's mixed ``test1.1.json``) are read alone. Question ids are the question's
own ``id`` where the file has one (CLUE's test files), else ``{subset}-{document id}-{question index}``:
document ids repeat between the ``d`` and ``m`` files, so the subset keeps them apart.

Each choice is one sequence of the parts (passage, question, choice) with segment ids 0, 1, 1, packed the
encoder's way (BERT: ``[CLS] passage [SEP] question [SEP] choice [SEP]``; XLNet: ``passage <sep> question <sep>
choice <sep> <cls>``); when it is too long, tokens come off the end of the longest part first. Predictions
map the question id to the text of the chosen choice; ``load_predictions`` also takes CLUE's ``{"id", "label"}``
submission lines.
"""
import dataclasses
import json
import os
import re

from tf_mrc.errors import UserError
from tf_mrc.tasks.base import DataError, QuestionIds, TaskOption, is_blank, load_json, question_id, register
from tf_mrc.tasks.choice import ChoiceExample, ChoiceTask, encoded_ids, truncate_longest_first

SUBSETS = ("d", "m")
SUBSET_IN_NAME = re.compile(r"(^|[^a-z])([dm])(-(?:train|dev|test))")


@dataclasses.dataclass
class C3Example(ChoiceExample):
    passage: str = ""
    question: str = ""


def subset_named(path):
    """The subset ('d' or 'm') a file's name gives, else None."""
    match = SUBSET_IN_NAME.search(os.path.basename(path))
    return match.group(2) if match else None


def subset_files(path, subsets):
    """[(file, subset)] that ``path`` stands for: its split of each of ``subsets`` when its name gives a subset,
    else [(path, '')]."""
    directory, name = os.path.split(path)
    match = SUBSET_IN_NAME.search(name)
    if not match:
        return [(path, "")]
    return [(os.path.join(directory, name[:match.start(2)] + subset + name[match.end(2):]), subset)
            for subset in subsets]


def _is_text_list(value):
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


@register
class C3Task(ChoiceTask):
    name = "c3"
    default_max_seq_length = 512
    default_files = {"train": "c3-d-train.json", "dev": "c3-d-dev.json", "predict": "c3-d-test.json"}
    num_choices = 4
    submission_key = "label"
    declared_options = (TaskOption("c3_subsets", str, "d,m", "which subsets a subset-named file stands for: d, m "
                                   "or d,m"),)

    def __init__(self, options=None):
        super().__init__(options)
        subsets = [s.strip() for s in self.options["c3_subsets"].split(",") if s.strip()]
        if not subsets or any(s not in SUBSETS for s in subsets):
            raise UserError("c3: --c3_subsets must be a comma-separated choice of d,m; got %r"
                            % self.options["c3_subsets"])
        self.subsets = subsets

    @classmethod
    def options_for_file(cls, options, path):
        """A file the user named is that file alone: its subset, unless ``c3_subsets`` asks for more."""
        if not options.get("c3_subsets") and subset_named(path):
            options = dict(options, c3_subsets=subset_named(path))
        return options

    # -- reading ----------------------------------------------------------------------------------------
    def source_files(self, path):
        return [file_path for file_path, _ in subset_files(path, self.subsets)]

    def read_examples(self, path, is_training):
        examples, ids = [], QuestionIds()
        for file_path, subset in subset_files(path, self.subsets):
            if file_path != path and not os.path.exists(file_path):
                raise DataError(file_path, "-", "-", "file not found (%s stands for the files of c3_subsets=%s)"
                                % (os.path.basename(path), ",".join(self.subsets)))
            for example, where, field in self._read_file(file_path, subset, is_training):
                ids.add(example.qid, file_path, where, field)
                examples.append(example)
        return examples

    def _read_file(self, path, subset, is_training):
        documents = load_json(path)
        if not isinstance(documents, list):
            raise DataError(path, "-", "-", "expected a JSON list of [sentences, questions, id] documents")
        if not documents:
            raise DataError(path, "-", "-", "no documents")
        for number, document in enumerate(documents, 1):
            where = str(number)
            if not isinstance(document, list) or len(document) != 3:
                raise DataError(path, where, "-", "expected [context sentences, questions, id]")
            sentences, questions, doc_id = document
            if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):   # it makes the question ids
                raise DataError(path, where, "id", "expected the document id, a string or integer, got %s"
                                % json.dumps(doc_id, ensure_ascii=False))
            where = "%d (id %s)" % (number, doc_id)
            if not _is_text_list(sentences):
                raise DataError(path, where, "context", "expected a list of sentences")
            if not isinstance(questions, list) or not questions:
                raise DataError(path, where, "questions", "expected a non-empty list of questions")
            passage = "\n".join(sentences)
            if is_blank(passage):
                raise DataError(path, where, "context", "empty passage (nothing but whitespace or invisible "
                                                        "characters)")
            for index, question in enumerate(questions):
                field = "questions[%d]" % index
                if not isinstance(question, dict) or not isinstance(question.get("question"), str):
                    raise DataError(path, where, field + ".question", "expected the question text")
                choices = question.get("choice")
                if not _is_text_list(choices) or not 2 <= len(choices) <= self.num_choices:
                    raise DataError(path, where, field + ".choice", "expected 2 to %d choice strings"
                                    % self.num_choices)
                answer = question.get("answer")
                if answer is None:   # missing or null: a test question
                    answer = ""
                if not isinstance(answer, str):
                    raise DataError(path, where, field + ".answer", "expected the text of one choice, got %s"
                                    % json.dumps(answer, ensure_ascii=False))
                if answer and answer not in choices:
                    raise DataError(path, where, field + ".answer", "%r is not among the choices %s"
                                    % (answer, choices))
                if not answer and is_training:
                    raise DataError(path, where, field + ".answer", "missing: training needs the answer")
                if "id" in question:
                    qid = question_id(path, where, question["id"], field + ".id")
                else:
                    qid = "-".join(part for part in (subset, str(doc_id), str(index)) if part)
                label = choices.index(answer) if answer else -1
                yield C3Example(qid, choices, label, passage, question["question"]), where, field + ".id"

    # -- features ---------------------------------------------------------------------------------------
    def check_settings(self, settings, tokenizer):
        least = tokenizer.num_special_tokens(3) + 3
        if settings.max_seq_length < least:
            raise UserError("--max_seq_length must be >= %d (a token of passage, question and choice + %d special "
                            "tokens), got %d" % (least, least - 3, settings.max_seq_length))

    def pack_choices(self, example, tokenizer, settings):
        passage = encoded_ids(tokenizer, example.passage)
        question = encoded_ids(tokenizer, example.question)
        budget = settings.max_seq_length - tokenizer.num_special_tokens(3)
        packed, cut = [], False
        for choice in example.choices:
            parts = [passage, question, encoded_ids(tokenizer, choice)]
            lengths = truncate_longest_first([len(part) for part in parts], budget)
            cut = cut or lengths[0] < len(passage)
            packed.append(tokenizer.pack([list(part[:n]) for part, n in zip(parts, lengths)], (0, 1, 1),
                                         settings.max_seq_length))
        return packed, cut
