"""The tasks' official metrics, computed exactly as their publishers' evaluation scripts do, plus seed aggregation.

* CMRC 2018 (also used for DRCD): ymcui/cmrc2018 ``squad-style-data/cmrc2018_evaluate.py`` (v5). Chinese characters
  and a fixed punctuation list are single segments, other runs are NLTK words; F1 comes from the longest common
  *contiguous* run of segments, EM compares texts after punctuation removal.
* CJRC (CAIL 2019 reading comprehension): the CoQA-derived ``evaluate.py`` of china-ai-law-challenge/CAIL2019.
  Character-bag F1 on letters and digits only, leave-one-out over the gold answers, reported per domain.
* accuracy (CHID, C3) and the "mean (max)" over seeds of the reference tables.

Scores are returned unrounded (x100 where the official script reports percentages); rounding is for display.
"""
import collections
import functools
import os
import re

import nltk
from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

from tf_mrc.errors import UserError

# --------------------------------------------------------------------------------------------------
# CMRC 2018 / DRCD
# --------------------------------------------------------------------------------------------------

# The official ``sp_char`` list. The script compares it with one character at a time, so the two-character
# entry '……' can never match (a lone '…' is not in the list): kept as published so scores stay comparable.
CMRC_PUNCTUATION = frozenset([
    '-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=',
    '，', '。', '：', '？', '！', '“', '”', '；', '’', '《', '》', '……', '·', '、',
    '「', '」', '（', '）', '－', '～', '『', '』'])

_CJK_CHARACTER = re.compile(r'[\u4e00-\u9fa5]')
_WORD_TOKENIZER = NLTKWordTokenizer()
# NLTK's English Punkt model in its punkt_tab format, shipped with tf_mrc (source and licence in its README.md)
PUNKT_ENGLISH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "punkt_tab", "english")


def load_punkt_parameters(directory=PUNKT_ENGLISH):
    """PunktParameters from a punkt_tab directory, read exactly as NLTK 3.9's ``punkt.load_punkt_params`` reads
    it (one entry per line, tab-separated fields, the trailing newline dropped). NLTK 3.8 knows only the pickled
    model, so the reading is done here: both NLTK versions get the same parameters."""
    def lines(name):
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            return [line[:-1] if line.endswith("\n") else line for line in f]

    params = PunktParameters()
    params.collocations = {tuple(line.split("\t")) for line in lines("collocations.tab")}
    params.sent_starters = set(lines("sent_starters.txt"))
    params.abbrev_types = set(lines("abbrev_types.txt"))
    params.ortho_context = collections.defaultdict(int, {
        word: int(flags) for word, flags in (line.split("\t") for line in lines("ortho_context.tab"))})
    return params


@functools.lru_cache(maxsize=None)
def _nltk_punkt_installed():
    """Whether NLTK's own English Punkt data (punkt_tab, or punkt before NLTK 3.8.2) is installed."""
    try:
        nltk.sent_tokenize("probe")
    except LookupError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def shipped_sentence_splitter():
    """NLTK's English Punkt sentence splitter built from the parameters shipped with tf_mrc."""
    return PunktSentenceTokenizer(load_punkt_parameters())


def word_tokenize(text, sentence_splitter=None):
    """The pipeline of ``nltk.word_tokenize(text)`` (preserve_line=False), which the official script calls on
    every non-CJK run: split sentences with the English Punkt model (a period stays on an abbreviation such as
    'dr.' or 'u.s.' and is split off only at a sentence end), then NLTKWordTokenizer on each sentence.
    ``sentence_splitter``: default NLTK's own installed model, else the same model shipped with tf_mrc."""
    if sentence_splitter is None:
        if _nltk_punkt_installed():
            return nltk.word_tokenize(text)
        sentence_splitter = shipped_sentence_splitter()
    return [token for sentence in sentence_splitter.tokenize(text) for token in _WORD_TOKENIZER.tokenize(sentence)]


def mixed_segmentation(text, rm_punc=False):
    """Segments of ``text`` (lower-cased, stripped): every CJK character (U+4E00..U+9FA5) and every official
    punctuation mark is one segment, the runs of other characters between them are NLTK words.
    With ``rm_punc`` the official punctuation marks are dropped instead."""
    segments = []
    pending = ""
    for char in str(text).lower().strip():
        if rm_punc and char in CMRC_PUNCTUATION:
            continue
        if _CJK_CHARACTER.match(char) or char in CMRC_PUNCTUATION:
            if pending:
                segments.extend(word_tokenize(pending))
                pending = ""
            segments.append(char)
        else:
            pending += char
    if pending:
        segments.extend(word_tokenize(pending))
    return segments


def remove_punctuation(text):
    """``text`` lower-cased and stripped, without the official punctuation marks (what EM compares)."""
    return "".join(char for char in str(text).lower().strip() if char not in CMRC_PUNCTUATION)


def find_lcs(first, second):
    """Longest common contiguous run of two sequences: (the run taken from ``first``, its length).

    Ties go to the run that ends first in ``first`` (then in ``second``), as in the official script."""
    best_length = 0
    best_end = 0
    previous = [0] * (len(second) + 1)
    for i, item in enumerate(first):
        current = [0] * (len(second) + 1)
        for j, other in enumerate(second):
            if item == other:
                current[j + 1] = previous[j] + 1
                if current[j + 1] > best_length:
                    best_length = current[j + 1]
                    best_end = i + 1
        previous = current
    return first[best_end - best_length:best_end], best_length


def cmrc_f1(gold_answers, prediction):
    """Best F1 (0..1) of ``prediction`` over ``gold_answers``, precision and recall from the segment LCS."""
    prediction_segments = mixed_segmentation(prediction, rm_punc=True)
    scores = []
    for answer in gold_answers:
        answer_segments = mixed_segmentation(answer, rm_punc=True)
        _, lcs_length = find_lcs(answer_segments, prediction_segments)
        if lcs_length == 0:
            scores.append(0.0)
            continue
        precision = lcs_length / len(prediction_segments)
        recall = lcs_length / len(answer_segments)
        scores.append(2 * precision * recall / (precision + recall))
    return max(scores)


def cmrc_em(gold_answers, prediction):
    """1 if ``prediction`` equals some gold answer after remove_punctuation, else 0."""
    prediction = remove_punctuation(prediction)
    return int(any(remove_punctuation(answer) == prediction for answer in gold_answers))


def evaluate_cmrc(questions, predictions):
    """Official CMRC 2018 scores of ``predictions`` ({question_id: answer}) on ``questions`` [(id, gold texts)].

    Returns {"f1", "em"} (x100, averaged over ALL questions: a missing prediction scores 0) and
    {"total", "skipped"} (questions, and how many of them had no prediction)."""
    f1_sum = em_sum = 0.0
    skipped = 0
    for question_id, gold_answers in questions:
        if not gold_answers:
            raise UserError("CMRC evaluation: question %s has no gold answers" % question_id)
        if question_id not in predictions:
            skipped += 1
            continue
        prediction = str(predictions[question_id])
        f1_sum += cmrc_f1(gold_answers, prediction)
        em_sum += cmrc_em(gold_answers, prediction)
    if not questions:
        raise UserError("CMRC evaluation: there are no questions to score")
    total = len(questions)
    return {"f1": 100.0 * f1_sum / total, "em": 100.0 * em_sum / total, "total": total, "skipped": skipped}


# --------------------------------------------------------------------------------------------------
# CJRC
# --------------------------------------------------------------------------------------------------

CJRC_DOMAINS = ("civil", "criminal")


def cjrc_normalize(text):
    """Lower-case, then keep only the characters for which str.isdigit() or str.isalpha() holds."""
    return "".join(char for char in text.lower() if char.isdigit() or char.isalpha())


def _cjrc_exact(gold, prediction):
    return int(cjrc_normalize(gold) == cjrc_normalize(prediction))


def _cjrc_f1(gold, prediction):
    """F1 of the character multisets. An empty side (unanswerable, or nothing but punctuation) scores 1 when
    the other side is empty too, else 0."""
    gold_chars = cjrc_normalize(gold)
    prediction_chars = cjrc_normalize(prediction)
    if not gold_chars or not prediction_chars:
        return float(gold_chars == prediction_chars)
    common = sum((collections.Counter(gold_chars) & collections.Counter(prediction_chars)).values())
    if common == 0:
        return 0.0
    precision = common / len(prediction_chars)
    recall = common / len(gold_chars)
    return 2 * precision * recall / (precision + recall)


def cjrc_scores(gold_answers, prediction):
    """(F1, EM), each 0..1, of one prediction. With n > 1 gold answers: the mean over i of the best score
    against the gold answers other than the i-th (CoQA's leave-one-out, which makes model and human scores
    comparable); with one gold answer: the score against it. An empty list counts as one empty (unanswerable)
    gold answer, as the official script's gold loader does."""
    gold_answers = list(gold_answers) or [""]
    if len(gold_answers) > 1:
        reference_sets = [gold_answers[:i] + gold_answers[i + 1:] for i in range(len(gold_answers))]
    else:
        reference_sets = [gold_answers]
    f1 = sum(max(_cjrc_f1(gold, prediction) for gold in references) for references in reference_sets)
    em = sum(max(_cjrc_exact(gold, prediction) for gold in references) for references in reference_sets)
    return f1 / len(reference_sets), em / len(reference_sets)


def evaluate_cjrc(examples, predictions):
    """Official CJRC scores. ``examples``: (question_id, domain, gold_answers) with domain 'civil' or
    'criminal'; ``predictions``: {question_id: answer}, a missing one scores 0.

    Returns {"civil"|"criminal"|"overall": {"f1", "em" (x100), "total" (questions)}}; a domain without
    questions scores 0. The official script additionally rounds to one decimal (display only here)."""
    sums = {domain: [0.0, 0.0, 0] for domain in CJRC_DOMAINS}   # f1, em, questions
    seen = set()
    for question_id, domain, gold_answers in examples:
        if domain not in sums:
            raise ValueError("CJRC evaluation: question %s has domain %r, expected 'civil' or 'criminal'"
                             % (question_id, domain))
        # The official script keeps the last of duplicated ids with only a warning; an id must name one question.
        if question_id in seen:
            raise ValueError("CJRC evaluation: question id %s appears twice" % question_id)
        seen.add(question_id)
        sums[domain][2] += 1
        if question_id in predictions:
            f1, em = cjrc_scores(gold_answers, predictions[question_id])
            sums[domain][0] += f1
            sums[domain][1] += em
    sums["overall"] = [sum(sums[domain][k] for domain in CJRC_DOMAINS) for k in range(3)]
    return {name: {"f1": 100.0 * f1 / max(1, total), "em": 100.0 * em / max(1, total), "total": total}
            for name, (f1, em, total) in sums.items()}


# --------------------------------------------------------------------------------------------------
# Accuracy and seed aggregation
# --------------------------------------------------------------------------------------------------

def accuracy(gold, predictions):
    """{"accuracy": x100, "total": n} of ``predictions`` against ``gold`` (both {id: label}); missing ids are wrong."""
    if not gold:
        raise ValueError("accuracy: no gold labels")
    correct = sum(1 for key, label in gold.items() if key in predictions and predictions[key] == label)
    return {"accuracy": 100.0 * correct / len(gold), "total": len(gold)}


def aggregate_seeds(results, names):
    """Mean and max over seeds of each metric in ``names`` (``results``: one metric dict per seed), the
    reference tables' "mean (max)" convention. Returns {name: {"mean", "max", "values"}}."""
    if not results:
        raise ValueError("aggregate_seeds: no seed results")
    aggregated = {}
    for name in names:
        values = []
        for seed, result in enumerate(results):
            if name not in result:
                raise ValueError("aggregate_seeds: result of seed #%d has no metric %r" % (seed, name))
            values.append(result[name])
        aggregated[name] = {"mean": sum(values) / len(values), "max": max(values), "values": values}
    return aggregated


def results_markdown(task, model, aggregated, names):
    """A small markdown table (metric | mean (max) | per-seed values), figures with three decimals."""
    seeds = len(aggregated[names[0]]["values"]) if names else 0
    lines = ["**%s / %s** (%d seed%s)" % (task, model, seeds, "" if seeds == 1 else "s"), "",
             "| metric | mean (max) | per-seed values |", "|---|---|---|"]
    for name in names:
        entry = aggregated[name]
        lines.append("| %s | %.3f (%.3f) | %s |" % (
            name, entry["mean"], entry["max"], ", ".join("%.3f" % value for value in entry["values"])))
    return "\n".join(lines) + "\n"
