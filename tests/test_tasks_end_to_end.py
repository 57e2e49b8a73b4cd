"""Every task through the same run: train -> eval -> predict on small fixtures made from the shipped passages."""
import json

import pytest

from tf_mrc import experiment

PASSAGES = json.load(open(experiment.embedded_default().train_file, encoding="utf-8"))["data"]


def _questions():
    for article in PASSAGES:
        paragraph = article["paragraphs"][0]
        for qa in paragraph["qas"]:
            yield paragraph["context"], qa


def _cjrc_file(path):
    """CJRC-shaped data: the shipped span questions plus YES / NO / unknown ones, civil and criminal."""
    data = []
    for index, article in enumerate(PASSAGES):
        paragraph = article["paragraphs"][0]
        qas = [dict(qa, is_impossible="false") for qa in paragraph["qas"]]
        qas.append({"id": "%s-yes" % article["title"], "question": "这段文字是中文吗？", "is_impossible": "false",
                    "answers": [{"text": "YES", "answer_start": -1}]})
        qas.append({"id": "%s-no" % article["title"], "question": "这段文字是英文吗？", "is_impossible": "false",
                    "answers": [{"text": "NO", "answer_start": -1}]})
        qas.append({"id": "%s-unk" % article["title"], "question": "作者是谁？", "is_impossible": "true",
                    "answers": []})
        data.append({"domain": "civil" if index % 2 else "criminal",
                     "paragraphs": [{"context": paragraph["context"], "casename": article["title"], "qas": qas}]})
    path.write_text(json.dumps({"version": "1.0", "data": data}, ensure_ascii=False), encoding="utf-8")
    return str(path)


def _c3_file(path):
    """C3-shaped documents: each question's choices are its answer and answers to other questions."""
    answers = [qa["answers"][0]["text"] for _, qa in _questions()]
    documents = []
    for index, (context, qa) in enumerate(_questions()):
        gold = qa["answers"][0]["text"]
        distractors = [a for a in answers if a != gold][index % 5:index % 5 + 2 + index % 2]
        choices = sorted([gold] + distractors)
        documents.append([[context], [{"question": qa["question"], "choice": choices, "answer": gold}],
                          "doc-%d" % index])
    path.write_text(json.dumps(documents, ensure_ascii=False), encoding="utf-8")
    return str(path)


def _chid_file(path):
    """FewCLUE-shaped cloze lines: a four-character span of each passage is the blank."""
    spans = [(context, context.find(qa["answers"][0]["text"]), qa["answers"][0]["text"])
             for context, qa in _questions() if len(qa["answers"][0]["text"]) == 4]
    candidates_pool = [text for _, _, text in spans]
    lines = []
    for index, (context, start, text) in enumerate(spans):
        candidates = sorted(set([text] + candidates_pool[:6]))[:7]
        if text not in candidates:
            candidates[-1] = text
        content = context[:start] + "#idiom#" + context[start + len(text):]
        lines.append(json.dumps({"id": index, "candidates": candidates, "content": content,
                                 "answer": candidates.index(text)}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("task, make, max_len, metric", [
    ("cjrc", _cjrc_file, 128, "f1"),
    ("c3", _c3_file, 128, "accuracy"),
    ("chid", _chid_file, 64, "accuracy"),
])
def test_task_trains_evaluates_and_predicts(tmp_path, task, make, max_len, metric):
    data = make(tmp_path / ("%s.json" % task))
    spec = experiment.embedded_default(str(tmp_path / "out"))
    spec.task, spec.train_file, spec.dev_file = task, data, data
    spec.max_seq_length, spec.num_train_epochs, spec.log_every = max_len, 8.0, 1000
    results = experiment.run(spec)
    scores = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert scores == results[0] and 0.0 <= scores[metric] <= 100.0 and scores["total"] > 0
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text(encoding="utf-8"))
    assert len(predictions) == scores["total"]
