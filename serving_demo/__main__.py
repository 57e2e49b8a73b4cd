"""Answer questions with an exported frozen graph.

    python -m serving_demo --pb model.pb                                 # the bundled sample passages
    python -m serving_demo --pb model.pb --passage TEXT --question TEXT
    python -m serving_demo --pb model.pb --file samples.json [--output predictions.json]
    python -m serving_demo --pb model.pb --serve 8000                    # http://127.0.0.1:8000/
    python -m serving_demo --pb model.pb --passage TEXT --question TEXT --choices A B C   # c3

``--file`` takes the task's own format (SQuAD-style JSON for cmrc2018/drcd/cjrc, C3's and CHID's own files), like
``--predict_file``; passages longer than one window are answered over all their windows, exactly as evaluation
does. C3 and CHID questions take ``--choices`` (CHID: a passage with one ``#idiom#`` blank, no question).
"""
import argparse
import json
import os
import sys

from tf_mrc.errors import UserError, fail, one_line_errors
from tf_mrc.outputs import write_json
from tf_mrc.tasks.base import is_blank

MAX_BATCH_WINDOW_MS = 10000   # the default body deadline: a longer wait for company only delays answers
SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples", "samples.json")


def _print_answers(questions, predictions, nbest, timings):
    for qid, question in questions:
        best = (nbest.get(qid) or [{}])[0]
        score = "score %.3f, probability %.3f" % (best["score"], best["probability"]) if "score" in best else \
            "probability %.3f" % best["probability"] if "probability" in best else "no span"
        print("%s  %s\n    -> %s   (%s)" % (qid, question, predictions.get(qid, ""), score))
    total = timings["featurize_ms"] + timings["model_ms"] + timings["postprocess_ms"]
    print("latency: %.1f ms for %d questions (%d windows): featurize %.1f ms, model %.1f ms, postprocess %.1f ms; "
          "%.1f ms per question" % (total, len(questions), timings["features"], timings["featurize_ms"],
                                    timings["model_ms"], timings["postprocess_ms"], total / max(len(questions), 1)))


def main(argv=None):
    from serving_demo.server import Limits
    limits = Limits()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pb", required=True, help="the frozen graph (its sidecar model.pb.json beside it)")
    parser.add_argument("--passage", help="a passage to ask --question about")
    parser.add_argument("--question")
    parser.add_argument("--choices", nargs="+", help="the choices (C3) or candidate idioms (CHID) of --passage")
    parser.add_argument("--file", help="questions in the task's format (default: the bundled samples)")
    parser.add_argument("--output", help="write {question_id: answer} here (--file mode)")
    parser.add_argument("--serve", type=int, metavar="PORT", help="answer JSON POSTs on 127.0.0.1:PORT")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="windows per model run; with --serve the most windows of concurrent requests batched "
                             "together (default 8)")
    parser.add_argument("--batch_window_ms", type=float, default=limits.batch_window_ms,
                        help="--serve: how long a waiting window waits for others to share its model run "
                             "(default %(default)s ms)")
    parser.add_argument("--one_at_a_time", action="store_true",
                        help="--serve: answer one request at a time, no batching (the bench's baseline)")
    parser.add_argument("--max_windows", type=int, default=limits.max_windows,
                        help="--serve: model windows per request (default %(default)s); more is refused with 413")
    parser.add_argument("--max_connections", type=int, default=limits.max_connections,
                        help="--serve: connections served at once (default %(default)s)")
    args = parser.parse_args(argv)
    if (args.passage is None) != (args.question is None and args.choices is None):
        parser.error("--passage goes with --question (and --choices for c3, chid)")
    for name in ("batch_size", "max_windows", "max_connections"):
        if getattr(args, name) <= 0:
            fail(UserError("--%s must be at least 1, got %d" % (name, getattr(args, name))))
    if not 0 <= args.batch_window_ms <= MAX_BATCH_WINDOW_MS:   # NaN and inf too: the batcher could never wait them
        fail(UserError("--batch_window_ms must be a number of milliseconds in 0-%d, got %g"
                       % (MAX_BATCH_WINDOW_MS, args.batch_window_ms)))
    if args.serve is not None and not 0 <= args.serve <= 65535:
        fail(UserError("--serve takes a port in 0-65535 (0: any free port), got %d" % args.serve))
    if args.passage is not None and is_blank(args.passage):
        fail(UserError("--passage is empty (nothing but whitespace or invisible characters)"))
    if args.output:
        _check_output(args.output)
    from serving_demo.model import FrozenModel
    with one_line_errors():
        model = FrozenModel(args.pb, batch_size=args.batch_size)
        if args.serve is not None:
            limits = Limits(max_windows=args.max_windows, max_connections=args.max_connections,
                            batch_window_ms=args.batch_window_ms)
            return _serve(model, args.serve, limits, not args.one_at_a_time)
        if args.passage is not None:
            item = {"passage": args.passage, "question": args.question or ""}
            if args.choices:
                item["choices"] = args.choices
            result = model.answer([item])[0]
            print("%s\n    -> %s   (score %s, probability %s)\nlatency: %.1f ms (%d windows)" % (
                args.question or "", result["answer"], _rounded(result["score"]), _rounded(result["probability"]),
                result["latency_ms"], result["windows"]))
            return 0
        path = args.file or SAMPLES
        examples = model.task.read_examples(path, is_training=False)
        predictions, nbest, timings = model.predict_examples(examples)
        _print_answers([(e.qid, getattr(e, "question", "")) for e in examples], predictions, nbest, timings)
        if args.output:
            write_json(args.output, predictions)
    return 0


def _check_output(path):
    """Refuse an --output that cannot be written before the model answers anything."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        fail(UserError("--output %s is a directory: give a file name" % path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        fail(UserError("--output %s: %s is not a writable directory" % (path, directory)))


def _rounded(value):
    return "-" if value is None else "%.3f" % value


# The page's first question for the choice tasks (span tasks start with the first of samples.json).
CHOICE_SAMPLES = {
    "c3": {"passage": "男：今天下午的会议改到三点了。\n女：好的，我这就通知大家。", "question": "会议几点开始？",
           "choices": ["两点", "三点", "四点"]},
    "chid": {"passage": "他做事总是#idiom#，从来不肯多花一分力气，结果每次都要返工。",
             "choices": ["敷衍了事", "精益求精", "一丝不苟", "全力以赴"]},
}


def _serve(model, port, limits, batching):
    from serving_demo.server import make_server
    sample = CHOICE_SAMPLES.get(model.task.name)
    if sample is None and os.path.isfile(SAMPLES):
        paragraph = json.load(open(SAMPLES, encoding="utf-8"))["data"][0]["paragraphs"][0]
        sample = {"passage": paragraph["context"], "question": paragraph["qas"][0]["question"]}
    server = make_server(model, port, sample, limits=limits, batching=batching)
    print("serving %s on http://127.0.0.1:%d/ (POST JSON {\"passage\", \"question\"} or a list; %s; Ctrl-C stops)"
          % (model.sidecar["task"], server.server_address[1],
             "batches of up to %d windows" % model.batch_size if batching else "one request at a time"), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
