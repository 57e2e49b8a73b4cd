"""The span-extraction family (CMRC 2018, DRCD, CJRC): read SQuAD-style JSON, slide windows, decode spans.

Answers are always cut from the original passage by character offsets: tokens carry (start, end) offsets into
the text the model read, and tasks that convert the text first (DRCD: traditional -> simplified) keep a map
from every converted character back to the original ones.
"""
import collections
import dataclasses
import json
from typing import List, Optional

import numpy as np

from tf_mrc.errors import UserError
from tf_mrc.tasks.base import (DataError, QuestionIds, Task, check_text, is_blank, iter_json_lines, load_json,
                               question_id, softmax, text_lines)

ANSWER_CLASSES = ("span", "yes", "no", "unknown")


@dataclasses.dataclass
class SpanExample:
    qid: str
    question: str
    context: str                          # the original passage; answers are cut from it
    gold_texts: List[str]                 # every gold answer, as the metric sees them
    answer_start: int = -1                # char offset of the first answer in ``context`` (-1: none / unaligned)
    answer_text: str = ""
    answer_type: str = "span"             # one of ANSWER_CLASSES
    model_context: Optional[str] = None   # the text the model reads, when it differs from ``context``
    model_question: Optional[str] = None
    char_map: Optional[list] = None       # model_context char i comes from context[char_map[i][0]:char_map[i][1]]
    domain: str = ""                      # CJRC's civil | criminal

    @property
    def model_text(self):
        return self.context if self.model_context is None else self.model_context


def align_answer(context, text, start):
    """The offset of ``text`` in ``context`` nearest to ``start`` (published starts are sometimes off by a few
    characters), or -1 when the text does not occur at all."""
    if not text:
        return -1
    if 0 <= start and context[start:start + len(text)] == text:
        return start
    best, pos = -1, context.find(text)
    while pos != -1:
        if best == -1 or abs(pos - start) < abs(best - start):
            best = pos
        pos = context.find(text, pos + 1)
    return best


def _squad_articles(path):
    """(where, article) for each article of a SQuAD-style file: the ``data`` list of one JSON document, or one
    article per line of a JSON-lines file, which is read as a stream (a large corpus never sits in memory whole;
    the standard library has no streaming parser for one big document)."""
    lines = (line for line in text_lines(path) if line.strip())
    first_line = next(lines, "")
    try:
        first = json.loads(first_line)
    except (ValueError, RecursionError):   # not one JSON value per line: read below as one document
        first = None
    if isinstance(first, dict) and "paragraphs" in first:
        for number, article in iter_json_lines(path):
            yield "line %d" % number, article
        return
    # A one-line document is the whole file only when nothing follows it (two files concatenated are not one
    # document: load_json refuses the extra data instead of reading the first and dropping the rest).
    whole = isinstance(first, dict) and "data" in first and next(lines, None) is None
    dataset = check_text(path, "-", first, first_line) if whole else load_json(path)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise DataError(path, "-", "data", "expected a JSON object with a 'data' list (SQuAD-style) or one "
                                           "article {paragraphs: [...]} per line")
    for a_index, article in enumerate(dataset["data"]):
        yield "data[%d]" % a_index, article


def iter_squad_style(path, make_example):
    """Walk ``data[].paragraphs[].qas[]`` (see _squad_articles), validating the shape and yielding each example
    as it is read; ``make_example(record_id, article, paragraph, qa, context)`` builds it. Errors name the
    file, the question (or paragraph) and the field."""
    ids, count = QuestionIds(), 0
    for article_where, article in _squad_articles(path):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(path, article_where, "paragraphs", "missing or not a list")
        for p_index, paragraph in enumerate(paragraphs):
            where = "%s.paragraphs[%d]" % (article_where, p_index)
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                raise DataError(path, where, "context", "missing or not a string")
            if is_blank(context):
                raise DataError(path, where, "context", "empty passage (nothing but whitespace or "
                                                        "invisible characters)")
            qas = paragraph.get("qas")
            if not isinstance(qas, list):
                raise DataError(path, where, "qas", "missing or not a list")
            for q_index, qa in enumerate(qas):
                position = "%s.qas[%d]" % (where, q_index)
                if not isinstance(qa, dict):
                    raise DataError(path, position, "-", "question record is not an object")
                qid = question_id(path, position, qa.get("id"))
                record = "question %s" % qid
                ids.add(qid, path, "%s (%s)" % (record, position))
                if not isinstance(qa.get("question"), str):  # empty questions occur in the published data
                    raise DataError(path, record, "question", "missing or not a string")
                answers = qa.get("answers", [])
                if not isinstance(answers, list) or any(
                        not isinstance(a, dict) or not isinstance(a.get("text"), str) for a in answers):
                    raise DataError(path, record, "answers", "expected a list of {text, answer_start}")
                for a in answers:
                    start = a.get("answer_start", -1)
                    if isinstance(start, bool) or not isinstance(start, int):  # true would count as 1
                        raise DataError(path, record, "answers.answer_start", "not an integer: %s" % json.dumps(start))
                count += 1
                yield make_example(record, article, paragraph, qa, context)
    if not count:
        raise DataError(path, "-", "data", "no questions")


def read_squad_style(path, make_example):
    """The examples of ``iter_squad_style`` as a list."""
    return list(iter_squad_style(path, make_example))


def max_context_flags(windows):
    """Per window, 1 for each of its positions that sees the most context (on its nearer side) there among all
    windows containing it, else 0: google BERT's rule, so each token is scored in one window only. Ties go to
    the earlier window. Each window visits only its own positions, so the work grows with the passage length
    times the windows' overlap, not with the passage length squared."""
    if not windows:
        return []
    size = max(start + length for start, length in windows)
    best_score = np.full(size, -np.inf)
    best_window = np.full(size, -1)
    for index, (start, length) in enumerate(windows):
        positions = np.arange(start, start + length)
        score = np.minimum(positions - start, start + length - 1 - positions) + 0.01 * length
        better = score > best_score[start:start + length]
        best_score[start:start + length][better] = score[better]
        best_window[start:start + length][better] = index
    return [(best_window[start:start + length] == index).astype(int).tolist()
            for index, (start, length) in enumerate(windows)]


def _token_spans(offsets, char_map):
    """Token character spans in the ORIGINAL context, composing tokenizer offsets with the conversion map.
    An empty span (SentencePiece's bare '▁' piece) stays empty, at the original position of its character."""
    if char_map is None:
        return [(s, e) for s, e in offsets]
    spans = []
    for s, e in offsets:
        if s == e:
            position = char_map[s][0] if s < len(char_map) else char_map[-1][1]
            spans.append((position, position))
        else:
            spans.append((char_map[s][0], char_map[e - 1][1]))
    return spans


def pack_window(tokenizer, query_ids, passage_ids, max_seq_length):
    """(PackedInput, position of the first passage token) of one window, in the order the encoder's layout
    fine-tunes span tasks: question then passage (BERT's run_squad), or passage then question (XLNet's run_squad:
    ``P <sep> Q <sep> <cls>``). The part read first is segment 0."""
    if tokenizer.passage_first:
        packed = tokenizer.pack([passage_ids, query_ids], [0, 1], max_seq_length)
        return packed, packed.part_starts[0]
    packed = tokenizer.pack([query_ids, passage_ids], [0, 1], max_seq_length)
    return packed, packed.part_starts[1]


def window_pairs(output, first, count, settings):
    """Candidate (start, end, start score, end score) of one window, positions counted from the passage's first
    token ``first`` (the passage has ``count`` tokens). Outputs of XLNet's head (``start_top_index``) name their
    own beam: each of its top starts with each of that start's top ends, scored by log-probabilities. Otherwise
    the n_best_size best start logits of the passage are paired with its n_best_size best end logits."""
    if "start_top_index" in output:
        starts, ends = np.asarray(output["start_top_index"]), np.asarray(output["end_top_index"])
        start_scores, end_scores = np.asarray(output["start_top_log_probs"]), np.asarray(output["end_top_log_probs"])
        per_start = len(ends) // len(starts)
        return [(int(starts[i]) - first, int(ends[i * per_start + j]) - first, float(start_scores[i]),
                 float(end_scores[i * per_start + j])) for i in range(len(starts)) for j in range(per_start)]
    start_logits, end_logits = np.asarray(output["start_logits"]), np.asarray(output["end_logits"])
    top_starts = np.argsort(-start_logits[first:first + count])[:settings.n_best_size]
    top_ends = np.argsort(-end_logits[first:first + count])[:settings.n_best_size]
    return [(int(s), int(e), float(start_logits[first + s]), float(end_logits[first + e]))
            for s in top_starts for e in top_ends]


class SpanTask(Task):
    """Shared by every span task: subclasses implement ``iter_examples`` or ``read_examples``; a task whose head
    predicts more than the span (CJRC) overrides the three hooks ``label_shapes``, ``window_labels`` and
    ``oracle_head_outputs``."""

    head = "span"
    metric_names = ("f1", "em")

    def label_shapes(self):
        """{name: shape} of the labels this task adds to every window."""
        return {}

    def window_labels(self, example, span_in_window):
        """The added labels of one window of ``example`` (``span_in_window``: its gold span lies inside)."""
        return {}

    def oracle_head_outputs(self, features):
        """What a perfect model outputs for the added labels of one feature."""
        return {}

    def check_settings(self, settings, tokenizer):
        room = settings.max_seq_length - settings.max_query_length - tokenizer.num_special_tokens(2)
        if room < 1:
            raise UserError("--max_seq_length must be >= %d (--max_query_length %d + %d special tokens + 1 passage "
                            "token), got %d" % (settings.max_query_length + tokenizer.num_special_tokens(2) + 1,
                                                settings.max_query_length, tokenizer.num_special_tokens(2),
                                                settings.max_seq_length))

    def feature_shapes(self, settings):
        t = settings.max_seq_length
        shapes = {"input_ids": [t], "input_mask": [t], "segment_ids": [t], "example_index": [],
                  "start_position": [], "end_position": []}
        shapes.update(self.label_shapes())
        return shapes

    def iter_features(self, examples, tokenizer, settings, is_training, stats, first_index=0):
        passage = None   # (context, model text) last encoded: consecutive questions share their passage
        for example_index, example in enumerate(examples, first_index):
            query_ids = tokenizer.encode(example.model_question or example.question)[0][:settings.max_query_length]
            if passage != (example.context, example.model_text):
                passage = (example.context, example.model_text)
                doc_ids, offsets = tokenizer.encode(example.model_text)
                spans = _token_spans(offsets, example.char_map)
            if not doc_ids:
                stats["empty_passage"] += 1
                continue
            answer_tokens = self._answer_tokens(example, spans)
            if answer_tokens:
                first, last = answer_tokens
                if last - first + 1 > settings.max_answer_length:
                    stats["too_long"] += 1  # longer than decoding allows: lost at prediction time
                if (spans[first][0], spans[last][1]) != (example.answer_start,
                                                         example.answer_start + len(example.answer_text)):
                    stats["inexact"] += 1   # a gold boundary falls inside a token: only whole tokens come out
            if example.answer_type == "span" and example.answer_start < 0:
                stats["unaligned"] += 1
                if is_training:
                    continue
            # >= 1 passage token: check_settings ensures it before any work
            max_doc = settings.max_seq_length - len(query_ids) - tokenizer.num_special_tokens(2)
            windows, start = [], 0
            while True:
                length = min(len(doc_ids) - start, max_doc)
                windows.append((start, length))
                if start + length >= len(doc_ids):
                    break
                start += min(length, settings.doc_stride)
            answer_fits = False
            max_context = max_context_flags(windows)
            for window_index, (start, length) in enumerate(windows):
                packed, doc_offset = pack_window(tokenizer, query_ids, doc_ids[start:start + length],
                                                 settings.max_seq_length)
                start_pos = end_pos = packed.cls_index
                if answer_tokens and start <= answer_tokens[0] and answer_tokens[1] < start + length:
                    start_pos = answer_tokens[0] - start + doc_offset
                    end_pos = answer_tokens[1] - start + doc_offset
                    answer_fits = True
                features = {"input_ids": packed.input_ids, "input_mask": packed.input_mask,
                            "segment_ids": packed.segment_ids, "example_index": example_index,
                            "start_position": start_pos, "end_position": end_pos}
                features.update(self.window_labels(example, start_pos != packed.cls_index))
                yield features, {
                    "example_index": example_index, "doc_offset": doc_offset, "cls_index": packed.cls_index,
                    "spans": spans[start:start + length],
                    "max_context": max_context[window_index]}
            if answer_tokens and not answer_fits:
                stats["truncated"] += 1

    @staticmethod
    def _answer_tokens(example, spans):
        """(first, last) token index of the first gold span, or None when there is no usable span."""
        if example.answer_type != "span" or example.answer_start < 0:
            return None
        begin, end = example.answer_start, example.answer_start + len(example.answer_text)
        covering = [i for i, (s, e) in enumerate(spans) if e > begin and s < end]
        return (covering[0], covering[-1]) if covering else None

    # -- decoding ---------------------------------------------------------------------------------
    def span_candidates(self, examples, sidecar, outputs, settings):
        """Per example, the n-best spans over all its windows (see window_pairs): end >= start, at most
        max_answer_length tokens, inside the passage, start token scored in its max-context window; text cut from
        the passage. ``start_logit`` / ``end_logit`` are the head's scores (XLNet's: log-probabilities).
        Each candidate names its ``window`` (the index among the example's features, in sidecar order)."""
        by_example = collections.defaultdict(list)
        for record, output in zip(sidecar, outputs):
            by_example[record["example_index"]].append((record, output))
        candidates = {}
        for example_index, example in enumerate(examples):
            found = {}
            for window, (record, output) in enumerate(by_example.get(example_index, [])):
                count = len(record["spans"])
                for s, e, start_score, end_score in window_pairs(output, record["doc_offset"], count, settings):
                    if not (0 <= s <= e < count) or not record["max_context"][s] or \
                            e - s + 1 > settings.max_answer_length:
                        continue
                    begin, end = record["spans"][s][0], record["spans"][e][1]
                    text = example.context[begin:end]
                    score = start_score + end_score
                    if text not in found or found[text]["score"] < score:
                        found[text] = {"text": text, "score": score, "start": begin, "window": window,
                                       "start_logit": start_score, "end_logit": end_score}
            ranked = sorted(found.values(), key=lambda c: -c["score"])[:settings.n_best_size]
            if ranked:
                for candidate, p in zip(ranked, softmax([c["score"] for c in ranked])):
                    candidate["probability"] = float(p)
            candidates[example.qid] = ranked
        return candidates

    def postprocess(self, examples, sidecar, outputs, settings):
        nbest = self.span_candidates(examples, sidecar, outputs, settings)
        predictions = {qid: (ranked[0]["text"] if ranked else "") for qid, ranked in nbest.items()}
        return predictions, nbest

    def oracle_outputs(self, examples, featurized):
        """Logits a perfect model gives: +10 at the labelled start/end, -10 on every other token."""
        outputs = []
        for features in featurized.arrays:
            length = len(features["input_ids"])
            start, end = np.full(length, -10.0), np.full(length, -10.0)
            start[features["start_position"]] = end[features["end_position"]] = 10.0
            output = {"start_logits": start, "end_logits": end}
            output.update(self.oracle_head_outputs(features))
            outputs.append(output)
        return outputs

    def has_gold(self, example):
        return bool(example.gold_texts)

    def evaluate(self, examples, predictions):
        from tf_mrc import metrics
        return metrics.evaluate_cmrc([(example.qid, example.gold_texts) for example in examples], predictions)


def squad_example(qa, context, **extra):
    """A SpanExample from one SQuAD-style question: gold texts kept verbatim for the metric, the first answer
    aligned to the passage for training (its start searched near the published offset)."""
    answers = qa.get("answers", [])
    gold = [a["text"] for a in answers]
    first = answers[0] if answers else {"text": "", "answer_start": -1}
    text = first["text"].strip() or first["text"]
    start = align_answer(context, text, first.get("answer_start", -1))
    if start < 0 and text != first["text"]:
        text = first["text"]
        start = align_answer(context, text, first.get("answer_start", -1))
    return SpanExample(qid=str(qa["id"]).strip(), question=qa["question"], context=context, gold_texts=gold,
                       answer_start=start, answer_text=text, **extra)
