"""What the multiple-choice tasks (CHID, C3) share: one feature per question, every choice its own sequence.

A feature holds ``num_choices`` (C) packed sequences as [C, T] arrays (``input_ids``, ``input_mask``,
``segment_ids``), a ``choice_mask`` [C] (1 = real choice), the gold ``label`` [] (-1 when unknown) and the
``example_index`` []. The model's choice head scores each sequence: ``{"choice_logits": [C]}``. Questions with
fewer than C choices are padded with copies of their first sequence, masked out, rather than with empty rows:
an all-padding row would make every attention row of the encoder attend over nothing.
"""
import dataclasses
import functools

import numpy as np

from tf_mrc import metrics
from tf_mrc.errors import UserError
from tf_mrc.tasks.base import DataError, Task, load_json, load_json_lines, log_softmax


@dataclasses.dataclass
class ChoiceExample:
    qid: str
    choices: list
    label: int = -1     # index of the gold choice; -1 when the file carries no answer


@functools.lru_cache(maxsize=64)
def encoded_ids(tokenizer, text):
    """Token ids of ``text``, memoised: a passage is shared by the consecutive questions (or blanks) it carries."""
    return tuple(tokenizer.encode(text)[0])


def truncate_longest_first(lengths, budget):
    """Part lengths after removing one token at a time from the end of the currently longest part (the earlier
    part on ties) until the total fits ``budget``: the rule of BERT's multiple-choice baselines, computed level by
    level instead of token by token."""
    lengths = list(lengths)
    if budget < 0:
        raise UserError("max_seq_length leaves no room for the parts (%d positions)" % budget)
    excess = sum(lengths) - budget
    while excess > 0:
        top = max(lengths)
        tied = [i for i, n in enumerate(lengths) if n == top]
        below = max([n for n in lengths if n < top], default=0)
        if (top - below) * len(tied) <= excess:
            excess -= (top - below) * len(tied)
            for i in tied:
                lengths[i] = below
        else:
            # Level by level the earlier tied parts lose their token first.
            rounds, extra = divmod(excess, len(tied))
            for rank, i in enumerate(tied):
                lengths[i] = top - rounds - (1 if rank < extra else 0)
            excess = 0
    return lengths


def choice_index(example, value):
    """A prediction as the index of the choice it names: an index as is, a choice text by its (first) position;
    -1 for anything else, which scores as wrong."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value in example.choices:
        return example.choices.index(value)
    return -1


class ChoiceTask(Task):
    """Featurizing, decoding and scoring for tasks whose model picks one of a question's choices.

    Subclasses read their files into ChoiceExample subclasses, set ``num_choices`` and ``submission_key`` and
    implement ``pack_choices`` (and ``answer`` / ``decode`` where their answers differ)."""

    head = "choice"
    metric_names = ("accuracy",)
    num_choices = 4          # C: choices per feature, the real ones first
    submission_key = "label"  # value field of the benchmark's JSON-lines submission format {"id": .., key: ..}

    # -- features -------------------------------------------------------------------------------------
    def pack_choices(self, example, tokenizer, settings):
        """(one PackedInput per real choice, whether this example counts as ``truncated`` in the audit)."""
        raise NotImplementedError

    def feature_shapes(self, settings):
        choices, length = self.num_choices, settings.max_seq_length
        return {"input_ids": [choices, length], "input_mask": [choices, length], "segment_ids": [choices, length],
                "choice_mask": [choices], "label": [], "example_index": []}

    def iter_features(self, examples, tokenizer, settings, is_training, stats, first_index=0):
        stats["truncated"] += 0   # reported even when nothing is cut
        for index, example in enumerate(examples, first_index):
            if is_training and example.label < 0:
                raise UserError("%s: question %s has no answer to train on" % (self.name, example.qid))
            packed, cut = self.pack_choices(example, tokenizer, settings)
            stats["truncated"] += int(cut)
            rows = packed + [packed[0]] * (self.num_choices - len(packed))
            yield {
                "input_ids": [row.input_ids for row in rows],
                "input_mask": [row.input_mask for row in rows],
                "segment_ids": [row.segment_ids for row in rows],
                "choice_mask": [1] * len(packed) + [0] * (self.num_choices - len(packed)),
                "label": example.label,
                "example_index": index,
            }, {"example_index": index, "qid": example.qid}

    # -- decoding and scoring ---------------------------------------------------------------------------
    def answer(self, example, index):
        """What the predictions file says for choice ``index`` of ``example``."""
        return example.choices[index]

    def decode(self, examples, scores):
        """{example index: chosen choice} from {example index: log-probabilities of its real choices}."""
        return {index: int(np.argmax(logp)) for index, logp in scores.items()}

    def postprocess(self, examples, sidecar, outputs, settings):
        if len(outputs) != len(sidecar):
            raise ValueError("%s: %d model outputs for %d features" % (self.name, len(outputs), len(sidecar)))
        scores = {}
        for record, output in zip(sidecar, outputs):
            example = examples[record["example_index"]]
            logits = np.asarray(output["choice_logits"], dtype=np.float64)[:len(example.choices)]
            scores[record["example_index"]] = log_softmax(logits)
        predictions, nbest = {}, {}
        for index, chosen in self.decode(examples, scores).items():
            example, probabilities = examples[index], np.exp(scores[index])
            predictions[example.qid] = self.answer(example, chosen)
            nbest[example.qid] = [{"index": int(k), "text": example.choices[k], "probability": float(probabilities[k])}
                                  for k in np.argsort(-probabilities, kind="stable")]
        return predictions, nbest

    def oracle_outputs(self, examples, featurized):
        outputs = []
        for arrays in featurized.arrays:
            logits = np.zeros(self.num_choices, dtype=np.float32)
            if arrays["label"] >= 0:
                logits[arrays["label"]] = 1.0
            outputs.append({"choice_logits": logits})
        return outputs

    gold_field = "answer"
    answer_types = (str, int)

    def has_gold(self, example):
        return example.label >= 0

    def evaluate(self, examples, predictions):
        gold = {example.qid: example.label for example in examples if example.label >= 0}
        if not gold:
            raise UserError("%s: these examples carry no answers to score against" % self.name)
        chosen = {example.qid: choice_index(example, predictions[example.qid])
                  for example in examples if example.qid in predictions}
        return metrics.accuracy(gold, chosen)

    def check_predictions(self, path, examples, predictions):
        """A choice index outside the example's choices is a broken predictions file, not a wrong answer."""
        for example in examples:
            value = predictions.get(example.qid)
            if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < len(example.choices):
                raise DataError(path, "question %s" % example.qid, "answer", "choice index %d is outside its %d "
                                "choices (0-%d)" % (value, len(example.choices), len(example.choices) - 1))

    def load_predictions(self, path):
        """Either one JSON object {question_id: answer} or the benchmark's submission lines {"id": .., key: ..}."""
        try:
            loaded = load_json(path)
        except DataError:
            loaded = None   # several JSON documents: one submission object per line
        if isinstance(loaded, dict) and set(loaded) != {"id", self.submission_key}:
            self.check_answers(path, loaded.items())
            return loaded
        predictions = {}
        for number, line in enumerate(load_json_lines(path), 1):
            if not isinstance(line, dict) or "id" not in line or self.submission_key not in line:
                raise DataError(path, str(number), self.submission_key,
                                'expected one JSON object {id: answer} or lines {"id": .., "%s": ..}'
                                % self.submission_key)
            predictions[str(line["id"])] = line[self.submission_key]
        self.check_answers(path, predictions.items())
        return predictions
