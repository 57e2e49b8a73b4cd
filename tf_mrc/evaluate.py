"""Score any system's predictions with a task's official metric.

    python -m tf_mrc.evaluate --task=cmrc2018 DATA.json PREDICTIONS.json

The last line printed is the metric as JSON, e.g. {"f1": 85.1, "em": 64.2, "total": 3219, "skipped": 0}.
"""
import argparse
import json

from tf_mrc.errors import UserError, fail


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=["cmrc2018", "drcd", "cjrc", "chid", "c3"])
    parser.add_argument("--metric", default=None, help="cjrc: official (default) or cmrc")
    parser.add_argument("--chid_answers", default=None, help="chid (original format): the answer map")
    parser.add_argument("data")
    parser.add_argument("predictions")
    args = parser.parse_args(argv)
    from tf_mrc.tasks import get_task
    options = {key: value for key, value in (("metric", args.metric), ("chid_answers", args.chid_answers)) if value}
    try:
        task = get_task(args.task, options)
        examples = task.read_examples(args.data, is_training=False)
        predictions = task.load_predictions(args.predictions)
        result = task.evaluate(examples, predictions)
    except UserError as err:
        fail(err)
    print(json.dumps(result, ensure_ascii=False, sort_keys=True))


if __name__ == "__main__":
    main()
