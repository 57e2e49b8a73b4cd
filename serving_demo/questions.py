"""Demo requests <-> the task's own file format and its post-processed answers.

A request item is ``{"passage", "question"[, "choices"][, "id"]}``: span tasks (cmrc2018, drcd, cjrc) take a
passage and a question; C3 adds 2-4 ``choices``; CHID takes a passage with one ``#idiom#`` blank and 2-10
candidate idioms as ``choices`` (no question). Items are written as a file in the task's format and read back
by the task's reader, so every check of ``--predict_file`` (and DRCD's conversion) applies to the demo too.
"""
import json

NBEST_SHOWN = 5   # span candidates a result lists
READING_OPTIONS = ("split", "split_ratio")   # CJRC options choosing which records of a file are read


def serving_options(options):
    """The task options a model was trained with, less those that choose records of a file: the demo reads
    every question of a request."""
    return {name: value for name, value in (options or {}).items() if name not in READING_OPTIONS}


def kind_of(task):
    """'span' or 'choice': which fields a request item carries."""
    return "choice" if task.head == "choice" else "span"


def required_fields(task):
    """The request fields ``task`` needs, each with its type."""
    fields = [("passage", str)]
    if task.name != "chid":
        fields.append(("question", str))
    if kind_of(task) == "choice":
        fields.append(("choices", list))
    return fields


def write_task_file(task, items, handle):
    """Write ``items`` to the open text file ``handle`` in ``task``'s format; question i gets id "q<i>"."""
    qids = ["q%d" % index for index in range(len(items))]
    if task.name == "chid":     # FewCLUE's JSON lines, one blank per line
        for qid, item in zip(qids, items):
            handle.write(json.dumps({"id": qid, "content": item["passage"], "candidates": item["choices"]},
                                    ensure_ascii=False) + "\n")
    elif task.name == "c3":
        json.dump([[[item["passage"]], [{"id": qid, "question": item["question"], "choice": item["choices"]}],
                    qid] for qid, item in zip(qids, items)], handle, ensure_ascii=False)
    else:                       # SQuAD-style, one paragraph per item (CJRC: domain "" as in its blinded input)
        article = {"title": "request", "paragraphs": [
            {"context": item["passage"], "qas": [{"id": qid, "question": item["question"], "answers": []}]}
            for qid, item in zip(qids, items)]}
        if task.name == "cjrc":
            article["domain"] = ""
        json.dump({"version": "serving_demo", "data": [article]}, handle, ensure_ascii=False)
    return qids


def result(task, item, qid, answer, candidates):
    """One item's JSON result from the task's prediction and n-best list: the answer, its score, probability
    and character offset in the passage (span tasks), the n-best candidates, and the class (CJRC) or choice
    (CHID, C3) probabilities."""
    best = candidates[0] if candidates else {}
    out = {"id": item.get("id", qid), "question": item.get("question", ""), "answer": answer,
           "score": best.get("score"), "probability": best.get("probability"), "start": best.get("start")}
    if kind_of(task) == "choice":   # the answer: CHID's candidate index, C3's choice text
        chosen = [c for c in candidates if answer in (c["index"], c["text"])][:1] or [{}]
        out["probability"] = chosen[0].get("probability")
        out["choices"] = [{"index": c["index"], "text": c["text"], "probability": c["probability"]}
                          for c in sorted(candidates, key=lambda c: c["index"])]
        return out
    shown = [c for c in candidates if c.get("class", "span") == "span"][:NBEST_SHOWN]
    out["nbest"] = [{key: c[key] for key in ("text", "probability", "score", "start")} for c in shown]
    if any("class" in c for c in candidates):   # CJRC: span | yes | no | unknown
        classes = {}
        for c in candidates:
            classes.setdefault(c["class"], c["class_probability"])
        out["class"] = best.get("class")
        out["class_probability"] = best.get("class_probability")
        out["classes"] = classes
    return out
