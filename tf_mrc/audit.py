"""Check a data file before a long GPU job: how it featurizes, and the score a perfect model would get.

    python -m tf_mrc.audit --task=cmrc2018 --data FILE --vocab_file VOCAB [--max_seq_length 512 ...]
    python -m tf_mrc.audit --task=cmrc2018 --data FILE --model xlnet_mid --spm_model spiece.model

The oracle pushes the gold labels through the real features, post-processing and metric: anything below
~100 on clean data points at alignment, truncation or decoding losses, which the report counts
(span tasks: ``too_long`` answers exceed --max_answer_length tokens; ``inexact`` answers start or end
inside a word piece or SentencePiece piece). The oracle scores the questions that carry gold answers
(``without_gold`` counts the others: a test file has no oracle). The last line is JSON:
{"examples": .., "features": .., "unaligned": .., "truncated": .., "oracle": {...}}
"""
import argparse
import json

from tf_mrc.errors import UserError, fail

SETTINGS = ("max_seq_length", "doc_stride", "max_query_length", "max_answer_length")   # RunSpec's, same defaults


def audit(task, data_file, tokenizer, settings):
    examples = task.read_examples(data_file, is_training=False)
    featurized = task.featurize(examples, tokenizer, settings, is_training=False)
    outputs = task.oracle_outputs(examples, featurized)
    predictions, _ = task.postprocess(examples, featurized.sidecar, outputs, settings)
    scored = [example for example in examples if task.has_gold(example)]
    oracle = None
    if scored:
        scores = task.evaluate(scored, predictions)
        oracle = {name: round(scores[name], 3) if isinstance(scores.get(name), float) else scores.get(name)
                  for name in task.metric_names}
    report = {"examples": len(examples), "features": len(featurized.arrays),
              "unaligned": featurized.stats.get("unaligned", 0), "truncated": featurized.stats.get("truncated", 0),
              "oracle": oracle}
    if len(scored) < len(examples):
        report["without_gold"] = len(examples) - len(scored)
    extra = {k: v for k, v in featurized.stats.items() if k not in report and k != "examples"}
    if extra:
        report["other"] = extra
    return report


def main(argv=None):
    from tf_mrc import options, presets
    from tf_mrc.tasks import FeatureSettings, add_task_arguments, task_from_arguments
    from tf_mrc.modeling.layouts import check_max_seq_length
    from tf_mrc.tokenization import load_tokenizer
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_task_arguments(parser)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="roberta_wwm_ext_base", help="preset: decides the tokenizer family")
    parser.add_argument("--vocab_file")
    parser.add_argument("--spm_model")
    parser.add_argument("--lower_case", choices=["yes", "no"], help="default: the model's convention")
    options.add_arguments(parser, SETTINGS)
    args = parser.parse_args(argv)
    try:
        options.check_arguments(args, SETTINGS + ("model",))
        preset = presets.model_preset(args.model)
        task = task_from_arguments(args, args.data)
        tokenizer = load_tokenizer(preset.config.layout, args.vocab_file, args.spm_model,
                                   None if args.lower_case is None else args.lower_case == "yes")
        max_len = args.max_seq_length or min(preset.max_seq_length, task.default_max_seq_length)
        settings = FeatureSettings(max_len, args.doc_stride, args.max_query_length, args.max_answer_length)
        check_max_seq_length(preset.config, max_len)
        task.check_settings(settings, tokenizer)
        report = audit(task, args.data, tokenizer, settings)
    except UserError as err:
        fail(err)
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
