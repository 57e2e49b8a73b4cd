"""Answer questions with an exported frozen graph.

    python -m serving_demo --pb model.pb                                 # the bundled sample passages
    python -m serving_demo --pb model.pb --passage TEXT --question TEXT
    python -m serving_demo --pb model.pb --file samples.json [--output predictions.json]
    python -m serving_demo --pb model.pb --serve 8000                    # http://127.0.0.1:8000/

``--file`` takes the task's own format (SQuAD-style JSON for cmrc2018/drcd), like ``--predict_file``; passages
longer than one window are answered over all their windows, exactly as evaluation does.
"""
import argparse
import json
import os
import sys

from tf_mrc.errors import UserError, fail

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples", "samples.json")


def _print_answers(questions, predictions, nbest, timings):
    for qid, question in questions:
        best = (nbest.get(qid) or [{}])[0]
        score = "score %.3f, probability %.3f" % (best["score"], best["probability"]) if "score" in best else \
            "no span"
        print("%s  %s\n    -> %s   (%s)" % (qid, question, predictions.get(qid, ""), score))
    total = timings["featurize_ms"] + timings["model_ms"] + timings["postprocess_ms"]
    print("latency: %.1f ms for %d questions (%d windows): featurize %.1f ms, model %.1f ms, postprocess %.1f ms; "
          "%.1f ms per question" % (total, len(questions), timings["features"], timings["featurize_ms"],
                                    timings["model_ms"], timings["postprocess_ms"], total / max(len(questions), 1)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pb", required=True, help="the frozen graph (its sidecar model.pb.json beside it)")
    parser.add_argument("--passage", help="a passage to ask --question about")
    parser.add_argument("--question")
    parser.add_argument("--file", help="questions in the task's format (default: the bundled samples)")
    parser.add_argument("--output", help="write {question_id: answer} here (--file mode)")
    parser.add_argument("--serve", type=int, metavar="PORT", help="answer JSON POSTs on 127.0.0.1:PORT")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per model run")
    args = parser.parse_args(argv)
    if (args.passage is None) != (args.question is None):
        parser.error("--passage and --question go together")
    from serving_demo.model import FrozenModel
    try:
        model = FrozenModel(args.pb, batch_size=args.batch_size)
        if args.serve is not None:
            return _serve(model, args.serve)
        if args.passage is not None:
            result = model.answer([{"passage": args.passage, "question": args.question}])[0]
            print("%s\n    -> %s   (score %s, probability %s)\nlatency: %.1f ms (%d windows)" % (
                args.question, result["answer"], _rounded(result["score"]), _rounded(result["probability"]),
                result["latency_ms"], result["windows"]))
            return 0
        path = args.file or SAMPLES
        examples = model.task.read_examples(path, is_training=False)
        predictions, nbest, timings = model.predict_examples(examples)
        _print_answers([(e.qid, e.question) for e in examples], predictions, nbest, timings)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                json.dump(predictions, f, ensure_ascii=False, indent=1)
    except UserError as err:
        fail(err)
    return 0


def _rounded(value):
    return "-" if value is None else "%.3f" % value


def _serve(model, port):
    from serving_demo.server import make_server
    sample = None
    if os.path.isfile(SAMPLES):
        paragraph = json.load(open(SAMPLES, encoding="utf-8"))["data"][0]["paragraphs"][0]
        sample = (paragraph["context"], paragraph["qas"][0]["question"])
    server = make_server(model, port, sample)
    print("serving %s on http://127.0.0.1:%d/ (POST JSON {\"passage\", \"question\"} or a list; Ctrl-C stops)"
          % (model.sidecar["task"], server.server_address[1]), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
