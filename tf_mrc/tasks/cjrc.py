"""CJRC (CAIL 2019 reading comprehension): legal span extraction plus YES / NO / unknown answers.

Data (SQuAD 2.0-like): ``data[]`` articles carry ``domain`` ('civil' | 'criminal') and one paragraph
``{context, casename, qas}``; a question has ``id``, ``question``, ``is_impossible`` ("true" / "false") and
``answers`` [{text, answer_start}], one per question in the training file and three in dev / test. "YES" / "NO"
(answer_start -1) answer yes/no questions, an empty text (or no answer) marks an unanswerable one. The
competition's blinded input sets domain, casename and is_impossible to "" and answers to []: it reads, but
cannot be scored.

The answer type is that of the first answer's text, not ``is_impossible``: the published dev set flags "true" on
questions whose annotators all gave a real answer (e.g. 4_5, three times '准格尔旗民族幼儿园'), and the official
metric reads only the texts.

Options (``declared_options``; flags of every command):

* ``metric``: 'official' (default; the CAIL 2019 script: civil / criminal / overall) or 'cmrc' (the CMRC 2018
  definition of F1 / EM on the same texts, the one the reference tables report).
* ``split_ratio`` / ``split``: the reference tables trained on 90 % of the training file and evaluated on the
  remaining 10 %. Setting ``split_ratio`` (or ``split``; the ratio then defaults to 0.9) cuts the file by passage
  with a fixed seed (``split_by_passage``): training reads (``is_training=True``) get the first part, every other
  read the held-out part, unless ``split`` ('train' | 'dev') names the part. ``run_finetune.py`` passes the same
  file as train and dev file and ``--split_ratio`` as the task option:

      run_finetune.py --task=cjrc --train_file=DATA/big_train_data.json --dev_file=DATA/big_train_data.json \\
          --split_ratio=0.9 ...          # task_options={"split_ratio": 0.9}
"""
import collections
import random

import numpy as np

from tf_mrc import metrics
from tf_mrc.errors import UserError
from tf_mrc.tasks.base import DataError, TaskOption, load_json, register, softmax
from tf_mrc.tasks.span import ANSWER_CLASSES, SpanTask, read_squad_style, squad_example

CLASS_TEXTS = {"yes": "YES", "no": "NO", "unknown": ""}   # the answer text of each non-span class
METRICS = ("official", "cmrc")
SPLIT_PARTS = ("train", "dev")
DEFAULT_SPLIT_RATIO = 0.9
SPLIT_SEED = 12345
IS_IMPOSSIBLE_VALUES = ("true", "false", "", True, False)


def answer_type_of(text):
    """The class of an answer text as the official metric sees it: "YES" -> yes, "NO" -> no, "" -> unknown."""
    text = text.strip()
    return {"YES": "yes", "NO": "no", "": "unknown"}.get(text, "span")


def split_by_passage(examples, ratio, seed=SPLIT_SEED):
    """(first part, held-out part) of ``examples``: whole passages go to one side, so no passage (not even one
    repeated under another case id) has questions on both. Passages are shuffled with ``seed`` and the first
    round(ratio * passages) of them form the first part (at least one passage on each side); both parts keep
    the file order of their questions."""
    if not 0 < ratio < 1:
        raise UserError("split_ratio must lie strictly between 0 and 1, got %r" % (ratio,))
    passages = list(collections.OrderedDict.fromkeys(example.context for example in examples))
    if len(passages) < 2:
        raise UserError("cannot split %d passage(s) into a training and a held-out part" % len(passages))
    random.Random(seed).shuffle(passages)
    count = min(max(int(round(ratio * len(passages))), 1), len(passages) - 1)
    first = set(passages[:count])
    return ([example for example in examples if example.context in first],
            [example for example in examples if example.context not in first])


@register
class CjrcTask(SpanTask):
    name = "cjrc"
    head = "span_class"
    metric_names = ("f1", "em")
    default_files = {"train": "big_train_data.json", "dev": "dev_ground_truth.json",
                     "predict": "test_ground_truth.json"}
    declared_options = (
        TaskOption("metric", str, "official", "the official CJRC metric or the CMRC definition", METRICS),
        TaskOption("split_ratio", float, None, "split the file by passage (train part = ratio, held-out part = "
                   "the rest, fixed seed); pass the same file as --train_file and --dev_file"),
        TaskOption("split", str, None, "which part of the split file every read takes (none: training reads the "
                   "train part, the others the held-out part; giving it makes the ratio default to 0.9)", SPLIT_PARTS),
    )

    def __init__(self, options=None):
        super().__init__(options)
        self.metric = self.options["metric"]
        self.split = self.options["split"]
        self.split_ratio = self.options["split_ratio"]
        if self.split is not None and self.split_ratio is None:
            self.split_ratio = DEFAULT_SPLIT_RATIO
        if self.split_ratio is not None and not 0 < self.split_ratio < 1:
            raise UserError("cjrc: --split_ratio must be a number > 0 and < 1, got %r" % (self.split_ratio,))

    # -- data ---------------------------------------------------------------------------------------
    def read_examples(self, path, is_training):
        examples = read_squad_style(path, lambda record, article, paragraph, qa, context:
                                    self._example(path, record, article, qa, context))
        if self.split_ratio is None:
            return examples
        part = self.split or ("train" if is_training else "dev")
        try:
            first, held_out = split_by_passage(examples, self.split_ratio)
        except UserError as err:
            raise DataError(path, "-", "data", str(err))
        return first if part == "train" else held_out

    @staticmethod
    def _example(path, record, article, qa, context):
        domain = article.get("domain")
        if domain not in metrics.CJRC_DOMAINS + ("",):
            raise DataError(path, record, "domain", "expected 'civil' or 'criminal' (or '' in blinded input), "
                                                    "got %r" % (domain,))
        flag = qa.get("is_impossible", "")
        if not isinstance(flag, (str, bool)) or flag not in IS_IMPOSSIBLE_VALUES:
            raise DataError(path, record, "is_impossible", "expected \"true\" or \"false\", got %r" % (flag,))
        answers = qa.get("answers", [])
        answer_type = answer_type_of(answers[0]["text"]) if answers else "unknown"
        example = squad_example(qa, context, answer_type=answer_type, domain=domain)
        if answer_type != "span":   # YES / NO / "" are not cut from the passage (even where it contains "YES")
            example.answer_start, example.answer_text = -1, ""
        example.gold_texts = example.gold_texts or [""]
        return example

    # -- the class head's labels ---------------------------------------------------------------------
    def label_shapes(self):
        return {"answer_class": [], "class_weight": []}

    def window_labels(self, example, span_in_window):
        """The class of one window. A span question whose answer lies outside this window says nothing about
        the class, so its class loss is switched off there (weight 0) instead of teaching the head 'unknown'
        for an answerable question."""
        answer_class = ANSWER_CLASSES.index(example.answer_type)
        weight = 0 if example.answer_type == "span" and not span_in_window else 1
        return {"answer_class": answer_class, "class_weight": weight}

    def oracle_head_outputs(self, features):
        return {"class_logits": np.where(np.arange(len(ANSWER_CLASSES)) == features["answer_class"], 10.0, -10.0)}

    # -- decoding ---------------------------------------------------------------------------------
    def postprocess(self, examples, sidecar, outputs, settings):
        """The class head decides between the best span, "YES", "NO" and "" (unknown).

        Class evidence comes from ONE window: the one holding the best span candidate. Training switches the
        class loss off in the windows of a span question that do not contain its answer, so those windows'
        class outputs were never taught anything for such questions and averaging them in would let untrained
        windows outvote the one that sees the answer; for yes / no / unknown questions every window was trained
        on the class, so the best-span window is as good as any. Only an example without span candidates
        averages the class probabilities of all its windows.

        nbest lists the classes by probability, the span class expanded into its span candidates (each with
        its probability within the span class); every entry has ``class`` and ``class_probability``, and the
        first entry is the prediction.
        """
        spans = self.span_candidates(examples, sidecar, outputs, settings)
        class_logits = collections.defaultdict(list)
        for record, output in zip(sidecar, outputs):
            class_logits[record["example_index"]].append(output["class_logits"])
        predictions, nbest = {}, {}
        for example_index, example in enumerate(examples):
            windows = class_logits.get(example_index, [])
            ranked_spans = spans[example.qid]
            if ranked_spans:
                probabilities = softmax(windows[ranked_spans[0]["window"]])
            elif windows:
                probabilities = np.mean([softmax(logits) for logits in windows], axis=0)
            else:
                predictions[example.qid], nbest[example.qid] = "", []
                continue
            entries = []
            for index in np.argsort(-probabilities, kind="stable"):
                answer_class, probability = ANSWER_CLASSES[index], float(probabilities[index])
                if answer_class == "span":
                    entries.extend(dict(candidate, **{"class": "span", "class_probability": probability})
                                   for candidate in ranked_spans)
                else:
                    entries.append({"text": CLASS_TEXTS[answer_class], "class": answer_class,
                                    "class_probability": probability})
            predictions[example.qid], nbest[example.qid] = entries[0]["text"], entries
        return predictions, nbest

    # -- scoring ----------------------------------------------------------------------------------
    gold_field = "domain"

    def has_gold(self, example):
        """Every ground-truth question has a domain (no answers = unanswerable); blinded input has none."""
        return example.domain in metrics.CJRC_DOMAINS

    def evaluate(self, examples, predictions):
        """Flat result: the headline ``f1`` / ``em`` / ``total`` (overall, official CJRC definition unless the
        ``metric`` option says 'cmrc'), ``skipped`` (questions without a prediction, scored 0), the per-domain
        ``civil`` / ``criminal`` breakdown, and ``type_accuracy``: per gold type (that of the first gold
        answer), the share x100 of questions whose predicted answer has that type (None: no such question)."""
        for example in examples:
            if example.domain not in metrics.CJRC_DOMAINS:
                raise UserError("cjrc: question %s has no domain (blinded input?); scoring needs the ground-truth "
                                "file" % example.qid)
        if self.metric == "official":
            scores = metrics.evaluate_cjrc([(e.qid, e.domain, e.gold_texts) for e in examples], predictions)
        else:
            scores = _cmrc_by_domain(examples, predictions)
        result = dict(scores["overall"])
        result.update(skipped=sum(e.qid not in predictions for e in examples), metric=self.metric,
                      civil=scores["civil"], criminal=scores["criminal"])
        totals, correct = collections.Counter(), collections.Counter()
        for example in examples:
            totals[example.answer_type] += 1
            if example.qid in predictions and answer_type_of(str(predictions[example.qid])) == example.answer_type:
                correct[example.answer_type] += 1
        result["type_accuracy"] = {t: (100.0 * correct[t] / totals[t] if totals[t] else None)
                                   for t in ANSWER_CLASSES}
        result["type_total"] = {t: totals[t] for t in ANSWER_CLASSES}
        return result

    # -- prediction files -------------------------------------------------------------------------
    def load_predictions(self, path):
        """{id: answer}, or the official tool's list [{"id": .., "answer": ..}]."""
        loaded = load_json(path)
        if isinstance(loaded, dict):
            pairs = list(loaded.items())
        elif isinstance(loaded, list):
            pairs = []
            for index, item in enumerate(loaded):
                if not isinstance(item, dict) or "id" not in item or "answer" not in item:
                    raise DataError(path, "item %d" % index, "-", "expected {\"id\": .., \"answer\": ..}")
                pairs.append((str(item["id"]), item["answer"]))
        else:
            raise DataError(path, "-", "-", "expected {question_id: answer} or a list of {id, answer}")
        self.check_answers(path, pairs)
        predictions = {}
        for qid, answer in pairs:
            if qid in predictions:
                raise DataError(path, "question %s" % qid, "id", "appears twice")
            predictions[qid] = answer
        return predictions

    def write_predictions(self, out_dir, prefix, predictions, nbest):
        """Also ``{prefix}predictions_cjrc_official.json``: the list the official evaluation script reads."""
        import os
        from tf_mrc import outputs
        super().write_predictions(out_dir, prefix, predictions, nbest)
        official = [{"id": qid, "answer": answer} for qid, answer in predictions.items()]
        outputs.write_json(os.path.join(out_dir, prefix + "predictions_cjrc_official.json"), official)


def _cmrc_by_domain(examples, predictions):
    """The CMRC 2018 F1 / EM (x100) per domain and overall, shaped like ``metrics.evaluate_cjrc``'s result.
    Under this definition an unanswerable question predicted as "" gets EM 1 but F1 0 (no segments to share)."""
    sums = {name: [0.0, 0.0, 0] for name in metrics.CJRC_DOMAINS + ("overall",)}
    for example in examples:
        for name in (example.domain, "overall"):
            sums[name][2] += 1
            if example.qid in predictions:
                answer = str(predictions[example.qid])
                sums[name][0] += metrics.cmrc_f1(example.gold_texts, answer)
                sums[name][1] += metrics.cmrc_em(example.gold_texts, answer)
    return {name: {"f1": 100.0 * f1 / max(1, total), "em": 100.0 * em / max(1, total), "total": total}
            for name, (f1, em, total) in sums.items()}
