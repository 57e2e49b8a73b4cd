"""DRCD: traditional-Chinese span extraction. The model reads an OpenCC simplified copy (the Chinese
checkpoints were pre-trained mostly on simplified text); answers are cut from the original traditional
passage through the character map, even where a converted phrase changed length."""
from tf_mrc.errors import UserError
from tf_mrc.tasks.base import TaskOption, register
from tf_mrc.tasks.span import SpanTask, iter_squad_style, squad_example
from tf_mrc.tokenization import ChineseConverter, TokenizerError


@register
class DrcdTask(SpanTask):
    name = "drcd"
    default_files = {"train": "DRCD_training.json", "dev": "DRCD_dev.json", "predict": "DRCD_test.json"}
    declared_options = (TaskOption("opencc_config", str, "t2s", "OpenCC conversion applied before tokenization"),)

    def __init__(self, options=None):
        super().__init__(options)
        try:
            self.converter = ChineseConverter(self.options["opencc_config"])
        except TokenizerError:
            raise
        except Exception as err:   # opencc's error types differ between its implementations
            raise UserError("drcd: --opencc_config %r is not an OpenCC configuration (%s)"
                            % (self.options["opencc_config"], " ".join(str(err).split())))

    def cache_identity(self):
        return dict(self.options, converter=self.converter.identity)

    def iter_examples(self, path, is_training):
        converter = self.converter
        last = {}   # the passage of the previous question, converted: consecutive questions share it

        def make(record, article, paragraph, qa, context):
            if context not in last:
                last.clear()
                last[context] = converter.convert(context)
            model_context, char_map = last[context]
            return squad_example(qa, context, model_context=model_context, char_map=char_map,
                                 model_question=converter.convert(qa["question"])[0])

        return iter_squad_style(path, make)
