"""Score any system's predictions with a task's official metric.

    python -m tf_mrc.evaluate --task=cmrc2018 DATA.json PREDICTIONS.json

The last line printed is the metric as JSON, e.g. {"f1": 85.1, "em": 64.2, "total": 3219, "skipped": 0}.
DATA must carry the gold answers of every question; PREDICTIONS is {question_id: answer} (n-best files and
other shapes are refused, as are predictions that name none of DATA's questions).
"""
import argparse
import json

from tf_mrc.errors import UserError, fail


def score(task, data_path, predictions_path):
    examples = task.read_examples(data_path, is_training=False)
    task.check_gold(data_path, examples)
    predictions = task.load_predictions(predictions_path)
    task.check_predictions(predictions_path, examples, predictions)
    if not set(predictions) & {example.qid for example in examples}:
        raise UserError("%s: none of its %d question ids is a question of %s (predictions for another file?)"
                        % (predictions_path, len(predictions), data_path))
    return task.evaluate(examples, predictions)


def main(argv=None):
    from tf_mrc.tasks import add_task_arguments, task_from_arguments
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_task_arguments(parser)
    parser.add_argument("data")
    parser.add_argument("predictions")
    args = parser.parse_args(argv)
    try:
        task = task_from_arguments(args, args.data)
        result = score(task, args.data, args.predictions)
    except UserError as err:
        fail(err)
    print(json.dumps(result, ensure_ascii=False, sort_keys=True))


if __name__ == "__main__":
    main()
