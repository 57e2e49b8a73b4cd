"""DRCD: traditional-Chinese span extraction. The model reads an OpenCC simplified copy (the Chinese
checkpoints were pre-trained mostly on simplified text); answers are cut from the original traditional
passage through the character map, even where a converted phrase changed length."""
from tf_mrc.tasks.base import TaskOption, register
from tf_mrc.tasks.span import SpanTask, read_squad_style, squad_example
from tf_mrc.tokenization import ChineseConverter


@register
class DrcdTask(SpanTask):
    name = "drcd"
    default_files = {"train": "DRCD_training.json", "dev": "DRCD_dev.json", "predict": "DRCD_test.json"}
    declared_options = (TaskOption("opencc_config", str, "t2s", "OpenCC conversion applied before tokenization"),)

    def cache_identity(self):
        return dict(self.options, converter=ChineseConverter(self.options["opencc_config"]).identity)

    def read_examples(self, path, is_training):
        converter = ChineseConverter(self.options["opencc_config"])
        converted = {}

        def make(record, article, paragraph, qa, context):
            if context not in converted:
                converted[context] = converter.convert(context)
            model_context, char_map = converted[context]
            return squad_example(qa, context, model_context=model_context, char_map=char_map,
                                 model_question=converter.convert(qa["question"])[0])

        return read_squad_style(path, make)
