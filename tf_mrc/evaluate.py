"""Score any system's predictions with a task's official metric.

    python -m tf_mrc.evaluate --task=cmrc2018 DATA.json PREDICTIONS.json

The last line printed is the metric as JSON, e.g. {"f1": 85.1, "em": 64.2, "total": 3219, "skipped": 0}.
"""
import argparse
import json

from tf_mrc.errors import UserError, fail


def main(argv=None):
    from tf_mrc.tasks import add_task_arguments, task_from_arguments
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_task_arguments(parser)
    parser.add_argument("data")
    parser.add_argument("predictions")
    args = parser.parse_args(argv)
    try:
        task = task_from_arguments(args)
        examples = task.read_examples(args.data, is_training=False)
        predictions = task.load_predictions(args.predictions)
        result = task.evaluate(examples, predictions)
    except UserError as err:
        fail(err)
    print(json.dumps(result, ensure_ascii=False, sort_keys=True))


if __name__ == "__main__":
    main()
