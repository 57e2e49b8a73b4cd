"""The whole pipeline on the shipped tiny data: train -> eval -> predict, resume, seeds, CLI errors."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from tf_mrc import experiment
from tf_mrc.errors import UserError


def _spec(tmp_path, **overrides):
    spec = experiment.embedded_default(str(tmp_path / "out"))
    spec.num_train_epochs = overrides.pop("num_train_epochs", 30.0)
    spec.log_every = 1000
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


def test_tiny_train_eval_predict_learns_and_writes_outputs(tmp_path):
    results = experiment.run(_spec(tmp_path))
    out = tmp_path / "out"
    scores = json.loads((out / "eval_results.json").read_text())
    assert scores == results[0]
    assert scores["total"] == 29 and scores["skipped"] == 0
    assert scores["f1"] > 60.0, scores   # random init answers ~0: the tiny model must fit the passages
    predictions = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    nbest = json.loads((out / "nbest_predictions.json").read_text(encoding="utf-8"))
    assert len(predictions) == 29 and set(predictions) == set(nbest)
    passages = json.loads(open(experiment.embedded_default().train_file, encoding="utf-8").read())
    contexts = {q["id"]: p["context"] for a in passages["data"] for p in a["paragraphs"] for q in p["qas"]}
    for qid, answer in predictions.items():
        assert answer in contexts[qid]       # answers are cut from the passage, never rebuilt
    # Evaluating the saved checkpoint again (no training) gives the same numbers: resume/restore path.
    again = experiment.run(_spec(tmp_path, do_train=False, do_predict=False))
    assert again[0] == {key: value for key, value in scores.items() if key not in ("step", "best")}


def test_seeds_write_a_results_table(tmp_path):
    """The table's mean (max) is over each seed's best dev score during training (every 1.5 epochs), as
    the published tables are (here evaluated at step 5 and at the last, 8); the final scores are reported too."""
    experiment.run(_spec(tmp_path, seeds=2, num_train_epochs=2.0, eval_every_epochs=1.5, do_predict=False))
    table = (tmp_path / "out" / "results.md").read_text()
    assert "Best dev score" in table and "Last checkpoint" in table
    summary = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert len(summary["seeds"]) == 2
    for seed_index, seed in enumerate(summary["seeds"]):
        record = json.loads((tmp_path / "out" / ("seed_%d" % seed_index) / "best" / "best.json").read_text())
        assert seed["best"] == record["best"] == max(record["evaluations"], key=lambda e: e["metrics"]["f1"])
    for key, scores in (("aggregate", [seed["best"]["metrics"]["f1"] for seed in summary["seeds"]]),
                        ("aggregate_final", [seed["f1"] for seed in summary["seeds"]])):
        assert summary[key]["f1"]["max"] == max(scores)
        assert abs(summary[key]["f1"]["mean"] - sum(scores) / 2) < 1e-9
        assert "%.3f (%.3f)" % (sum(scores) / 2, max(scores)) in table


@pytest.mark.parametrize("overrides, message", [
    ({"train_file": "/nonexistent/train.json"}, "train file not found"),
    ({"vocab_file": os.path.join(ROOT, "requirements.txt")}, "not a BERT WordPiece"),
    ({"model": "google_bert_base"}, "vocab_size"),
    ({"do_train": False, "do_eval": False, "do_predict": False}, "nothing to do"),
])
def test_bad_input_is_a_user_error(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        experiment.run(_spec(tmp_path, **overrides))


def test_cli_prints_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{"context": "", "qas": []}]}]}', encoding="utf-8")
    vocab = experiment.embedded_default().vocab_file
    result = subprocess.run([sys.executable, os.path.join(ROOT, "run_finetune.py"), "--task=cmrc2018",
                             "--model=tiny", "--output_dir", str(tmp_path / "o"), "--train_file", str(bad),
                             "--vocab_file", vocab, "--do_train"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines and "bad.json" in lines[0] and "'context'" in lines[0] and "Traceback" not in result.stderr


def test_evaluate_and_audit_commands(tmp_path):
    data = experiment.embedded_default().train_file
    passages = json.loads(open(data, encoding="utf-8").read())
    gold = {q["id"]: q["answers"][0]["text"] for a in passages["data"] for p in a["paragraphs"] for q in p["qas"]}
    predictions = dict(gold)
    first = sorted(gold)[0]
    del predictions[first]
    pred_file = tmp_path / "pred.json"
    pred_file.write_text(json.dumps(predictions, ensure_ascii=False), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "tf_mrc.evaluate", "--task=cmrc2018", data, str(pred_file)],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    scores = json.loads(out.strip().splitlines()[-1])
    assert scores["total"] == 29 and scores["skipped"] == 1
    assert abs(scores["f1"] - 100.0 * 28 / 29) < 1e-9 and abs(scores["em"] - 100.0 * 28 / 29) < 1e-9
    out = subprocess.run([sys.executable, "-m", "tf_mrc.audit", "--task=cmrc2018", "--model=tiny", "--data", data,
                          "--vocab_file", experiment.embedded_default().vocab_file],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["examples"] == 29 and report["unaligned"] == 0 and report["oracle"]["f1"] == 100.0


def test_config_file_that_contradicts_the_preset_is_a_user_error(tmp_path):
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
                                  "intermediate_size": 128, "vocab_size": 372}))
    with pytest.raises(UserError, match="num_hidden_layers=3 but --model=tiny expects 2"):
        experiment.run(_spec(tmp_path, config_file=str(config)))
