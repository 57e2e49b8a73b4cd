"""CHID: Chinese idiom cloze. Each blank of a passage picks one idiom of its line's candidate list.

Two published formats, told apart by the type of ``content``:
  * ChID / CLUE: JSON lines ``{"content": [passage, ...], "candidates": [10 idioms]}``, blanks ``#idiomNNNNNN#``
    (several per passage, all passages of a line sharing the candidates); the answers live in a separate JSON
    map ``{"#idiomNNNNNN#": candidate index}`` (option ``chid_answers``, comma-separated files are merged since
    blank ids are unique across splits; by default ``<name>_answer.json`` beside the data file, the CLUE layout;
    test files have none).
  * FewCLUE: JSON lines ``{"id", "candidates": [7 idioms], "content": "...#idiom#...", "answer"}``, one blank.

Every blank is one example, every candidate one sequence of the parts (candidate, window), packed the
encoder's way (BERT: ``[CLS] candidate [SEP] window [SEP]``; XLNet: ``candidate <sep> window <sep> <cls>``).
The window is the passage tokens that fit beside the longest candidate, centred on the blank (shifted inwards
at the passage's ends), and the same for every candidate, so only the candidate differs between sequences.
The blank itself becomes four of the tokenizer's mask tokens (``[MASK]`` / ``<mask>``) -- an idiom-sized gap,
for BERT the signal masked-LM pre-training taught for "characters missing here" -- and the passage's other
blanks four unknown tokens, so the target stands apart from them. Mask and unknown tokens exist in every
encoder's vocabulary (a marker such as ``[unused1]`` has no SentencePiece counterpart).

Decoding (option ``chid_decoding``): blanks of one line share the candidates and each idiom fills one blank,
so by default the blanks of a line are assigned jointly, maximising the summed log-probability
(``optimal``, the Hungarian algorithm); ``greedy`` takes the most probable (blank, idiom) pair first;
``independent`` takes each blank's own argmax. bench/chid_decoding.py compares the three on simulated scores.

Predictions map the blank id (``#idiomNNNNNN#``, or the FewCLUE ``id``) to the candidate index: the CLUE
submission format; FewCLUE runs also get ``chidf_predict.json``, FewCLUE's ``{"id", "answer"}`` lines.
"""
import collections
import dataclasses
import json
import os
import re

import numpy as np

from tf_mrc import outputs
from tf_mrc.errors import UserError
from tf_mrc.tasks.base import (DataError, QuestionIds, TaskOption, load_json, load_json_lines, question_id,
                               register)
from tf_mrc.tasks.choice import ChoiceExample, ChoiceTask, encoded_ids
from tf_mrc.tokenization import TokenizerError

BLANK = re.compile(r"#idiom\d*#")
BLANK_LENGTH = 4     # tokens a blank becomes: the length of a (four-character) idiom
DECODINGS = ("optimal", "greedy", "independent")


@dataclasses.dataclass
class ChidExample(ChoiceExample):
    passage: str = ""    # the passage with all its blanks as in the file
    blank: str = ""      # this example's blank, e.g. "#idiom000123#"
    group: str = ""      # the line: its blanks share the candidates and are decoded together


def _is_index(value, count):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count


def centred_window(total, blank_start, budget):
    """First position of the ``budget``-token window with the blank in its middle, shifted inwards at the ends."""
    start = blank_start - (budget - BLANK_LENGTH) // 2
    return max(0, min(start, total - budget))


def assign_independent(logp):
    return [int(k) for k in np.argmax(logp, axis=1)]


def assign_greedy(logp):
    """Most probable (blank, candidate) pair first, each candidate once; blanks left over once the candidates
    run out take their own argmax."""
    chosen = assign_independent(logp)
    taken_rows, taken_columns = set(), set()
    for flat in np.argsort(-logp, axis=None, kind="stable"):
        row, column = divmod(int(flat), logp.shape[1])
        if row not in taken_rows and column not in taken_columns:
            chosen[row] = column
            taken_rows.add(row)
            taken_columns.add(column)
    return chosen


def assign_optimal(logp):
    """The one-candidate-per-blank assignment with the highest summed log-probability; blanks left over when
    there are more blanks than candidates take their own argmax."""
    chosen = assign_independent(logp)
    if logp.shape[0] <= logp.shape[1]:
        pairs = enumerate(_hungarian(-logp))
    else:  # more blanks than candidates: give each candidate its best blank instead
        pairs = ((row, column) for column, row in enumerate(_hungarian(-logp.T)))
    for row, column in pairs:
        chosen[row] = column
    return chosen


def _hungarian(cost):
    """Column of each row in the minimum-cost assignment of an n x m matrix, n <= m (the Hungarian algorithm
    with potentials, O(n^2 m)). Pure Python: the legacy stack has no SciPy, and a ChID line is at most 10 x 10."""
    rows, columns = cost.shape
    u, v = [0.0] * (rows + 1), [0.0] * (columns + 1)
    owner = [0] * (columns + 1)     # owner[j]: 1-based row holding column j; column 0 is the free slot
    for row in range(1, rows + 1):
        owner[0], free = row, 0
        reduced, previous, done = [float("inf")] * (columns + 1), [0] * (columns + 1), [False] * (columns + 1)
        while owner[free]:
            done[free] = True
            current, delta, nearest = owner[free], float("inf"), 0
            for j in range(1, columns + 1):
                if not done[j]:
                    value = cost[current - 1, j - 1] - u[current] - v[j]
                    if value < reduced[j]:
                        reduced[j], previous[j] = value, free
                    if reduced[j] < delta:
                        delta, nearest = reduced[j], j
            for j in range(columns + 1):
                if done[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    reduced[j] -= delta
            free = nearest
        while free:     # walk the augmenting path back, shifting columns to their new rows
            owner[free] = owner[previous[free]]
            free = previous[free]
    assignment = [0] * rows
    for j in range(1, columns + 1):
        if owner[j]:
            assignment[owner[j] - 1] = j - 1
    return assignment


ASSIGNERS = {"optimal": assign_optimal, "greedy": assign_greedy, "independent": assign_independent}


@register
class ChidTask(ChoiceTask):
    name = "chid"
    default_max_seq_length = 64
    default_files = {"train": "train.json", "dev": "dev.json", "predict": "test1.1.json"}   # CLUE's names
    num_choices = 10
    submission_key = "answer"
    declared_options = (
        TaskOption("chid_answers", str, None, "the answer map file(s) of the original ChID/CLUE format, "
                   "comma-separated (none: <name>_answer.json beside the data file)"),
        TaskOption("chid_decoding", str, "optimal", "assign candidates to the blanks of a passage jointly "
                   "(optimal, greedy) or blank by blank", DECODINGS),
    )

    def __init__(self, options=None):
        super().__init__(options)
        self.decoding = self.options["chid_decoding"]

    # -- reading ----------------------------------------------------------------------------------------
    def read_examples(self, path, is_training):
        records = load_json_lines(path)
        if not records:
            raise DataError(path, "-", "-", "no records")
        first_kind, examples = None, []
        answers = None
        for number, record in enumerate(records, 1):
            where = str(number)
            if not isinstance(record, dict):
                raise DataError(path, where, "-", "expected a JSON object per line")
            content = record.get("content")
            kind = "FewCLUE" if isinstance(content, str) else "ChID" if isinstance(content, list) else None
            if kind is None:
                raise DataError(path, where, "content", "expected a passage (FewCLUE) or a list of passages "
                                "(ChID/CLUE), got %s" % type(content).__name__)
            if first_kind is None:
                first_kind = kind
            elif kind != first_kind:
                raise DataError(path, where, "content", "a %s record in a %s file" % (kind, first_kind))
            if kind == "FewCLUE":
                examples.append(self._fewclue_example(path, number, record, is_training))
            else:
                if answers is None:
                    answers = self._answer_map(path)
                examples.extend(self._chid_examples(path, number, record, answers))
        self._check_ids(path, examples)
        if first_kind == "ChID":
            self._check_answered(path, examples, is_training)
        return examples

    def _candidates(self, path, where, record):
        candidates = record.get("candidates")
        if (not isinstance(candidates, list) or not 2 <= len(candidates) <= self.num_choices
                or not all(isinstance(c, str) and c for c in candidates)):
            raise DataError(path, where, "candidates", "expected a list of 2 to %d idioms" % self.num_choices)
        return candidates

    def _fewclue_example(self, path, number, record, is_training):
        qid = question_id(path, str(number), record.get("id"))
        where = "%d (id %s)" % (number, qid)
        candidates = self._candidates(path, where, record)
        blanks = BLANK.findall(record["content"])
        if len(blanks) != 1:
            raise DataError(path, where, "content", "expected one #idiom# blank, found %d" % len(blanks))
        label = record.get("answer", -1)
        if "answer" not in record and is_training:
            raise DataError(path, where, "answer", "missing: training needs the answer")
        if "answer" in record and not _is_index(label, len(candidates)):
            raise DataError(path, where, "answer", "expected a candidate index 0..%d, got %r"
                            % (len(candidates) - 1, label))
        return ChidExample(qid, candidates, label, record["content"], blanks[0], str(number))

    def _answer_files(self, path):
        """Option chid_answers, else ``<name>_answer.json`` beside ``path`` if present."""
        files = [f.strip() for f in (self.options.get("chid_answers") or "").split(",") if f.strip()]
        if not files:
            beside = os.path.splitext(path)[0] + "_answer.json"
            files = [beside] if os.path.isfile(beside) else []
        return files

    def source_files(self, path):
        return [path] + self._answer_files(path)

    def _answer_map(self, path):
        """The answer files merged: {blank: (answer file, candidate index)}."""
        answers = {}
        for answer_path in self._answer_files(path):
            loaded = load_json(answer_path)
            if not isinstance(loaded, dict):
                raise DataError(answer_path, "-", "-", 'expected a JSON object {"#idiomNNNNNN#": candidate index}')
            answers.update((blank, (answer_path, index)) for blank, index in loaded.items())
        return answers

    def _chid_examples(self, path, number, record, answers):
        where = str(number)
        candidates = self._candidates(path, where, record)
        examples = []
        for p, passage in enumerate(record["content"]):
            if not isinstance(passage, str):
                raise DataError(path, where, "content[%d]" % p, "expected a passage string")
            for blank in BLANK.findall(passage):
                if blank == "#idiom#":
                    raise DataError(path, where, "content[%d]" % p, "blank #idiom# without its number "
                                    "(the ChID format numbers blanks #idiomNNNNNN#)")
                label = -1
                if blank in answers:
                    answer_path, label = answers[blank]
                    if not _is_index(label, len(candidates)):
                        raise DataError(answer_path, blank, "-", "expected a candidate index 0..%d, got %r"
                                        % (len(candidates) - 1, label))
                examples.append(ChidExample(blank, candidates, label, passage, blank, where))
        if not examples:
            raise DataError(path, where, "content", "no #idiomNNNNNN# blank")
        return examples

    @staticmethod
    def _check_ids(path, examples):
        """FewCLUE ids and ChID blank ids each name one question of the file."""
        ids = QuestionIds()
        for example in examples:
            ids.add(example.qid, path, example.group)

    def _check_answered(self, path, examples, is_training):
        """A file's blanks are all answered or (a test file) none; training needs them all."""
        unanswered = [example for example in examples if example.label < 0]
        if unanswered and (is_training or len(unanswered) < len(examples)):
            raise DataError(path, unanswered[0].group, unanswered[0].qid,
                            "no answer in %s" % (self.options.get("chid_answers")
                                                  or "--chid_answers (nor in %s_answer.json beside the file)"
                                                  % os.path.splitext(os.path.basename(path))[0]))

    # -- features ---------------------------------------------------------------------------------------
    def check_settings(self, settings, tokenizer):
        least = tokenizer.num_special_tokens(2) + 2 * BLANK_LENGTH
        if settings.max_seq_length < least:
            raise UserError("--max_seq_length must be >= %d (a four-character idiom, the %d-token blank and %d "
                            "special tokens), got %d" % (least, BLANK_LENGTH, least - 2 * BLANK_LENGTH,
                                                         settings.max_seq_length))

    def pack_choices(self, example, tokenizer, settings):
        if tokenizer.mask_id is None or tokenizer.unk_id is None:
            raise TokenizerError("CHID needs a tokenizer with mask and unknown tokens for its blanks")
        context, blank_start, position = [], None, 0
        for match in BLANK.finditer(example.passage):
            context.extend(encoded_ids(tokenizer, example.passage[position:match.start()]))
            if match.group() == example.blank and blank_start is None:
                blank_start = len(context)
                context.extend([tokenizer.mask_id] * BLANK_LENGTH)
            else:
                context.extend([tokenizer.unk_id] * BLANK_LENGTH)
            position = match.end()
        context.extend(encoded_ids(tokenizer, example.passage[position:]))

        candidates = [encoded_ids(tokenizer, candidate) for candidate in example.choices]
        budget = (settings.max_seq_length - tokenizer.num_special_tokens(2)
                  - max(len(candidate) for candidate in candidates))
        if budget < BLANK_LENGTH:
            raise UserError("chid: max_seq_length %d leaves %d passage tokens beside the candidates of %s, "
                             "fewer than the blank's %d" % (settings.max_seq_length, budget, example.qid, BLANK_LENGTH))
        start = centred_window(len(context), blank_start, budget)
        window = context[start:start + budget]
        lost_blank = not start <= blank_start <= start + len(window) - BLANK_LENGTH
        packed = [tokenizer.pack([list(candidate), window], (0, 1), settings.max_seq_length)
                  for candidate in candidates]
        return packed, lost_blank

    # -- decoding ---------------------------------------------------------------------------------------
    def answer(self, example, index):
        return index

    def decode(self, examples, scores):
        groups = collections.OrderedDict()
        for index in scores:
            groups.setdefault(examples[index].group, []).append(index)
        chosen = {}
        for indices in groups.values():
            logp = np.stack([scores[index] for index in indices])
            chosen.update(zip(indices, ASSIGNERS[self.decoding](logp)))
        return chosen

    def write_predictions(self, out_dir, prefix, predictions, nbest):
        super().write_predictions(out_dir, prefix, predictions, nbest)
        if predictions and not all(BLANK.fullmatch(qid) for qid in predictions):
            outputs.write_text(os.path.join(out_dir, prefix + "chidf_predict.json"), "".join(
                json.dumps({"id": int(qid) if qid.isdigit() else qid, "answer": index}) + "\n"
                for qid, index in predictions.items()))
