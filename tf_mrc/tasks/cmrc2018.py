"""CMRC 2018: simplified-Chinese span extraction, SQuAD-style JSON, scored by the CMRC official F1/EM."""
from tf_mrc.tasks.base import register
from tf_mrc.tasks.span import SpanTask, iter_squad_style, squad_example


@register
class Cmrc2018Task(SpanTask):
    name = "cmrc2018"
    default_files = {"train": "cmrc2018_train.json", "dev": "cmrc2018_dev.json", "predict": "cmrc2018_test.json"}

    def iter_examples(self, path, is_training):
        return iter_squad_style(path, lambda record, article, paragraph, qa, context: squad_example(qa, context))
