"""Options declared once (tf_mrc.options, each task's TaskOptions) and validated once, before any work.

References: the flag table run_finetune.py had before its flags were generated (every name and default must
stay), the allowed ranges stated in the issue (issue 13: doc_stride, batch sizes, seeds, checkpoint interval,
steps, epochs, n-best), and the modules in tf_mrc/tasks.
"""
import json
import os
import pkgutil
import re
import subprocess
import sys

import pytest
from absl import flags

from conftest import ROOT, data_file
from tf_mrc import evaluate, experiment, options
from tf_mrc import tasks as tasks_package
from tf_mrc.errors import UserError
from tf_mrc.tasks import all_task_options, get_task, task_names

# (name, default) of every flag run_finetune.py defined by hand before they were generated from RunSpec.
HAND_WRITTEN_FLAGS = [
    ("task", "cmrc2018"), ("model", "roberta_wwm_ext_base"), ("output_dir", None), ("data_dir", None),
    ("train_file", None), ("dev_file", None), ("predict_file", None), ("init_checkpoint", None),
    ("vocab_file", None), ("spm_model", None), ("config_file", None), ("do_train", False), ("do_eval", False),
    ("do_predict", False), ("seeds", 1), ("seed", 12345), ("lower_case", None), ("max_seq_length", None),
    ("doc_stride", 128), ("max_query_length", 64), ("max_answer_length", 50), ("n_best_size", 20),
    ("num_train_epochs", None), ("train_batch_size", None), ("predict_batch_size", 32), ("learning_rate", None),
    ("warmup_proportion", None), ("max_train_steps", None), ("save_checkpoints_steps", 1000),
    ("keep_checkpoint_max", 3), ("log_every", 50), ("kernels", "fused"), ("cache_dir", None),
    ("lr_scale_with_workers", False), ("fp16_allreduce", False), ("precision", "fp32"),
    ("loss_scale_growth_interval", 2000), ("grad_accum_steps", None), ("recompute", False),
    ("attention_dropout_placement", "probs"), ("xla", False), ("weight_decay", None), ("eval_every_epochs", 0.5),
    ("preprocess_workers", None)]
# Task options: their flags default to None ("the task's default"); the task's default is what a run gets.
HAND_WRITTEN_TASK_FLAGS = [("opencc_config", "drcd", "t2s"), ("split_ratio", "cjrc", None),
                           ("metric", "cjrc", "official"), ("chid_answers", "chid", None),
                           ("chid_decoding", "chid", "optimal"), ("c3_subsets", "c3", "d,m")]


@pytest.fixture
def flag_values():
    values = flags.FlagValues()
    options.define_absl_flags(flags, values)
    values(["run_finetune.py"])
    return values


def test_every_hand_written_flag_keeps_its_name_and_default(flag_values):
    for name, default in HAND_WRITTEN_FLAGS:
        assert flag_values[name].default == default, name
    for name, task, default in HAND_WRITTEN_TASK_FLAGS:
        assert flag_values[name].default is None, name
        assert get_task(task).options[name] == default, name
    assert {f.name for f in options.declared()} == {name for name, _ in HAND_WRITTEN_FLAGS}


def test_grouped_help_lists_every_flag_once_with_its_default(flag_values):
    text = options.grouped_help(flag_values, "usage")
    headers = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headers == list(options.GROUPS) + [options.TASK_GROUP]
    listed = [line.split(":")[0].strip()[2:] for line in text.splitlines() if line.startswith("  --")]
    expected = [f.name for f in options.declared()] + [o.name for o in all_task_options()]
    assert sorted(listed) == sorted(expected) and len(listed) == len(set(listed))
    assert all("(default: " in line for line in text.splitlines() if line.startswith("  --"))
    for field in options.declared():      # each flag sits under its declared group
        section = text.split("\n%s:\n" % field.metadata["group"])[1].split("\n\n")[0]
        assert "  --%s: " % field.name in section


def test_help_flag_prints_the_groups(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "run_finetune.py"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "\nmemory/precision:\n  --kernels: " in result.stdout
    assert "--doc_stride: Stride between passage windows, in tokens. (default: 128)" in result.stdout


# -- validation ------------------------------------------------------------------------------------------------
BAD_VALUES = [
    ("doc_stride", 0, "an integer >= 1"), ("doc_stride", -3, "an integer >= 1"),
    ("train_batch_size", 0, "an integer >= 1"), ("predict_batch_size", -1, "an integer >= 1"),
    ("seeds", 0, "an integer >= 1"), ("save_checkpoints_steps", 0, "an integer >= 1"),
    ("max_train_steps", 0, "an integer >= 1"), ("num_train_epochs", -1.0, "a number > 0"),
    ("num_train_epochs", 0.0, "a number > 0"), ("n_best_size", 0, "an integer >= 1"),
    ("max_answer_length", 0, "an integer >= 1"), ("max_query_length", 0, "an integer >= 1"),
    ("max_seq_length", 0, "an integer >= 1"), ("learning_rate", 0.0, "a number > 0"),
    ("warmup_proportion", 1.5, "a number >= 0 and <= 1"), ("keep_checkpoint_max", 0, "an integer >= 1"),
    ("log_every", 0, "an integer >= 1"), ("grad_accum_steps", 0, "an integer >= 1"),
    ("weight_decay", -0.01, "a number >= 0"), ("eval_every_epochs", -1.0, "a number >= 0"),
    ("preprocess_workers", 0, "an integer >= 1"),
    ("loss_scale_growth_interval", 0, "an integer >= 1"), ("seed", -1, "an integer >= 0"),
    ("doc_stride", True, "an integer >= 1"), ("doc_stride", 1.5, "an integer >= 1"),
    ("learning_rate", float("nan"), "a number > 0"),
    ("precision", "fp8", "one of fp32|fp16|bf16"), ("kernels", "cuda", "one of fused|reference|blocksparse|auto"),
    ("attention_dropout_placement", "values", "one of probs|context"), ("task", "squad", "one of c3|chid|"),
    ("model", "bert_huge", "one of "), ("output_dir", None, "is required"),
]


@pytest.mark.parametrize("field, value, allowed", BAD_VALUES)
def test_each_bad_value_is_one_line_naming_the_flag_and_the_allowed_range(tmp_path, field, value, allowed):
    spec = experiment.embedded_default(str(tmp_path / "out"))
    setattr(spec, field, value)
    with pytest.raises(UserError) as err:
        options.validate(spec)
    message = str(err.value)
    assert message.startswith("--%s " % field) and allowed in message and "\n" not in message


def test_the_embedded_default_and_every_declared_default_are_valid(tmp_path):
    options.validate(experiment.embedded_default(str(tmp_path)))
    options.validate(options.RunSpec(output_dir=str(tmp_path)))


@pytest.mark.parametrize("overrides, message", [
    ({"doc_stride": 0}, "--doc_stride must be an integer >= 1, got 0"),
    ({"max_seq_length": 40, "max_query_length": 40}, "--max_seq_length must be >= 44 (--max_query_length 40 + 3 "
                                                     "special tokens + 1 passage token), got 40"),
    ({"max_seq_length": 256}, "--max_seq_length 256 exceeds the model's 128 position embeddings"),
    ({"task_options": {"c3_subsets": "d"}}, "--c3_subsets is not an option of task cmrc2018"),
    ({"task": "c3", "max_seq_length": 5}, "--max_seq_length must be >= 7 (a token of passage, question and choice + 4 "
                                          "special tokens), got 5"),
    ({"task": "chid", "max_seq_length": 10}, "--max_seq_length must be >= 11 (a four-character idiom, the 4-token "
                                             "blank and 3 special tokens), got 10"),
])
def test_run_stops_before_any_work(tmp_path, overrides, message):
    spec = experiment.embedded_default(str(tmp_path / "out"))
    for name, value in overrides.items():
        setattr(spec, name, value)
    with pytest.raises(UserError, match=re.escape(message)):
        experiment.run(spec)
    assert not (tmp_path / "out").exists()


# -- the task registry -----------------------------------------------------------------------------------------
def test_every_task_module_is_registered_under_its_module_name():
    modules = {m.name for m in pkgutil.iter_modules(tasks_package.__path__)} - {"base", "span", "choice"}
    # other test modules may register stand-in tasks of their own: count the package's
    packaged = [name for name in task_names() if type(get_task(name)).__module__.startswith("tf_mrc.tasks.")]
    assert packaged == sorted(modules) == ["c3", "chid", "cjrc", "cmrc2018", "drcd"]
    assert all(type(get_task(name)).__name__.endswith("Task") for name in packaged)
    with pytest.raises(UserError, match="unknown task 'squad'; known: c3, chid, cjrc, cmrc2018, drcd"):
        get_task("squad")


@pytest.fixture
def extra_task_module(tmp_path, monkeypatch):
    """A directory on the tasks package's path: a module written there is a task module."""
    monkeypatch.setattr(tasks_package, "__path__", list(tasks_package.__path__) + [str(tmp_path)])
    registry = dict(tasks_package._REGISTRY)
    modules = set(sys.modules)
    yield tmp_path
    tasks_package._REGISTRY.clear()
    tasks_package._REGISTRY.update(registry)
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def test_a_real_import_error_in_a_task_module_surfaces(extra_task_module):
    (extra_task_module / "broken.py").write_text("import a_module_that_is_not_installed\n")
    with pytest.raises(ModuleNotFoundError, match="a_module_that_is_not_installed"):
        get_task("cmrc2018")


def test_a_sixth_task_is_one_module(extra_task_module, tmp_path, capsys):
    """A new module registers a task with an option: the commands list it, build its flag and pass it on."""
    (extra_task_module / "sixth.py").write_text(
        "from tf_mrc.tasks.base import TaskOption, register\n"
        "from tf_mrc.tasks.span import SpanTask, read_squad_style, squad_example\n\n\n"
        "@register\n"
        "class SixthTask(SpanTask):\n"
        "    name = 'sixth'\n"
        "    declared_options = (TaskOption('sixth_case', str, 'keep', 'how answers are cased',\n"
        "                                   ('keep', 'upper')),)\n\n"
        "    def read_examples(self, path, is_training):\n"
        "        return read_squad_style(path, lambda record, article, paragraph, qa, context:\n"
        "                                squad_example(qa, context))\n\n"
        "    def evaluate(self, examples, predictions):\n"
        "        return dict(SpanTask.evaluate(self, examples, predictions), case=self.options['sixth_case'])\n")
    assert "sixth" in task_names()
    values = flags.FlagValues()
    options.define_absl_flags(flags, values)
    assert "sixth: how answers are cased (default: keep; one of keep|upper)" in values["sixth_case"].help
    data = str(tmp_path / "dev.json")
    with open(data, "w", encoding="utf-8") as f:
        json.dump({"data": [{"paragraphs": [{"context": "the CAT sat", "qas": [
            {"id": "q", "question": "who", "answers": [{"text": "CAT", "answer_start": 4}]}]}]}]}, f)
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps({"q": "cat"}))
    for arguments, case in (([], "keep"), (["--sixth_case=upper"], "upper")):
        evaluate.main(["--task=sixth"] + arguments + [data, str(predictions)])
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (result["case"], result["em"], result["total"]) == (case, 100.0, 1)
    with pytest.raises(SystemExit):
        evaluate.main(["--task=cmrc2018", "--sixth_case=upper", data, str(predictions)])
    assert "error: --sixth_case is not an option of task cmrc2018" in capsys.readouterr().err


def test_evaluate_chooses_c3_subsets(tmp_path, capsys):
    """``--c3_subsets`` reaches tf_mrc.evaluate: a d-named file is that file alone unless d,m asks for both."""
    data = data_file("c3/c3-d-dev.json")
    with open(data, encoding="utf-8") as f:
        d_questions = sum(len(document[1]) for document in json.load(f))
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps({"d-d1-0": "十点"}, ensure_ascii=False), encoding="utf-8")
    totals = {}
    for arguments in ([], ["--c3_subsets=d,m"]):
        evaluate.main(["--task=c3"] + arguments + [data, str(predictions)])
        totals[" ".join(arguments)] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["total"]
    assert totals[""] == d_questions < totals["--c3_subsets=d,m"]


def test_audit_passes_the_opencc_config_on(chinese_vocab, capsys):
    from tf_mrc import audit
    arguments = ["--task=drcd", "--data", data_file("drcd/DRCD_dev.excerpt.json"), "--vocab_file", chinese_vocab,
                 "--max_seq_length=128"]
    audit.main(arguments + ["--opencc_config=t2s"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["oracle"]["em"] == 100.0
    with pytest.raises(SystemExit) as exit_status:
        audit.main(arguments + ["--opencc_config=no_such_conversion"])
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.startswith("error: drcd: --opencc_config 'no_such_conversion' is not an OpenCC")


def test_the_reference_scripts_flag_names_set_the_same_options():
    """A command written for google-research/bert's run_squad.py (or zihangdai/xlnet's) keeps working: its names
    are aliases of ours, in run_finetune's absl flags and in the argparse tools alike."""
    import argparse
    values = flags.FlagValues()
    options.define_absl_flags(flags, values)
    values(["run_finetune.py", "--bert_config_file=c.json", "--nodo_lower_case", "--spiece_model_file=s.model"])
    assert (values.config_file, values.lower_case, values.spm_model) == ("c.json", False, "s.model")
    values(["run_finetune.py", "--model_config_path=x.json", "--do_lower_case"])
    assert (values.config_file, values.lower_case) == ("x.json", True)
    assert "Also --bert_config_file, --model_config_path." in values["config_file"].help
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, ["lower_case"], defaults=False)
    assert parser.parse_args(["--nodo_lower_case"]).lower_case is False
    assert parser.parse_args(["--do_lower_case"]).lower_case is True
    assert parser.parse_args([]).lower_case is None
