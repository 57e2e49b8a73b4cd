"""--init_checkpoint (and the export tools' --checkpoint) given a directory laid out as published TF releases are:
google-research/bert's chinese_L-12_H-768_A-12/ holds bert_model.ckpt.*, bert_config.json and vocab.txt, and no
``checkpoint`` state file, which tf.train.latest_checkpoint needs."""
import dataclasses
import json
import os
import shutil

import pytest

from tf_mrc import distributed, experiment, pretrained
from tf_mrc.errors import UserError
from tf_mrc.modeling.checkpoint import checkpoint_in_directory


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny model trained for one epoch, then laid out as a published release."""
    folder = tmp_path_factory.mktemp("release")
    spec = dataclasses.replace(experiment.embedded_default(str(folder / "run")), num_train_epochs=1.0,
                               do_eval=False, do_predict=False, eval_every_epochs=0)
    experiment.run(spec, log=lambda line: None)
    trained = checkpoint_in_directory(str(folder / "run"))
    directory = folder / "chinese_L-2_H-64_A-2"
    directory.mkdir()
    for suffix in (".index", ".data-00000-of-00001", ".meta"):
        shutil.copy(trained + suffix, str(directory / ("bert_model.ckpt" + suffix)))
    with open(str(folder / "run" / "run_config.json"), encoding="utf-8") as f:
        (directory / "bert_config.json").write_text(json.dumps(json.load(f)["model_config"]), encoding="utf-8")
    shutil.copy(spec.vocab_file, str(directory / "vocab.txt"))
    return {"directory": str(directory), "spec": spec, "folder": folder}


def test_the_release_checkpoint_config_and_vocabulary_are_found(release):
    directory = release["directory"]
    found = pretrained.release_directory(directory)
    assert found.checkpoint == os.path.join(directory, "bert_model.ckpt")
    assert (found.config_file, found.vocab_file, found.spm_model) == (
        os.path.join(directory, "bert_config.json"), os.path.join(directory, "vocab.txt"), None)


def test_a_run_starts_from_the_release_directory_alone(release, tmp_path):
    """No --config_file or --vocab_file: the directory supplies them, and every model variable loads."""
    lines = []
    spec = dataclasses.replace(release["spec"], output_dir=str(tmp_path / "out"), init_checkpoint=release["directory"],
                               vocab_file=None, max_train_steps=2)
    experiment.run(spec, log=lines.append)
    directory = release["directory"]
    assert "[init] --config_file defaults to %s" % os.path.join(directory, "bert_config.json") in lines
    assert "[init] --vocab_file defaults to %s" % os.path.join(directory, "vocab.txt") in lines
    loaded = [line for line in lines if line.startswith("init_checkpoint")]
    assert loaded and loaded[0].startswith("init_checkpoint %s: loaded 41 of 41 model variables"
                                           % os.path.join(directory, "bert_model.ckpt")), loaded


def test_explicit_flags_win_over_the_directory(release):
    spec = dataclasses.replace(release["spec"], init_checkpoint=release["directory"])
    resolved = pretrained.resolve_init_checkpoint(spec, distributed.SingleProcess(), log=lambda line: None)
    assert resolved.vocab_file == release["spec"].vocab_file   # given, so kept
    assert resolved.config_file == os.path.join(release["directory"], "bert_config.json")


def test_a_directory_of_several_checkpoints_without_a_state_file_names_them(release, tmp_path):
    directory = tmp_path / "two"
    shutil.copytree(release["directory"], str(directory))
    for name in os.listdir(str(directory)):
        if name.startswith("bert_model.ckpt"):
            shutil.copy(str(directory / name), str(directory / name.replace("bert_model", "other")))
    with pytest.raises(UserError) as err:
        pretrained.release_directory(str(directory))
    assert str(err.value) == ("%s holds 2 checkpoints (bert_model.ckpt, other.ckpt) and no 'checkpoint' file naming "
                              "the latest: pass one of them" % directory)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no checkpoint"):
        pretrained.release_directory(str(empty))


def test_export_reads_the_release_directory_as_the_run_does(release, tmp_path):
    """export.to_pb --checkpoint=DIR with no --config or --vocab_file: the .pb and its sidecar name the
    directory's files."""
    from export import to_pb
    out = tmp_path / "model.pb"
    to_pb.main(["--checkpoint", release["directory"], "--task", "cmrc2018", "--max_seq_length", "128",
                "--output", str(out)])
    with open(str(out) + ".json", encoding="utf-8") as f:
        sidecar = json.load(f)
    assert os.path.getsize(str(out)) > 0
    assert sidecar["checkpoint"] == os.path.join(release["directory"], "bert_model.ckpt")
    assert sidecar["model_config"]["hidden_size"] == 64 and sidecar["vocab_file"] == "model.vocab.txt"

