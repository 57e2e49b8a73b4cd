"""`pip install .`: the wheel carries the three packages, their data files and the console commands, and the
commands run from an installed copy with no clone on the path."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("tf-mrc-finetune", "tf-mrc-evaluate", "tf-mrc-audit", "tf-mrc-export", "tf-mrc-from-pytorch",
            "tf-mrc-to-pytorch", "tf-mrc-serve")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 62:
        pytest.skip("setuptools %s cannot build from pyproject.toml metadata" % setuptools.__version__)
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy of the tracked files: the build writes build/ and *.egg-info beside them
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.dirname(str(source / name)), exist_ok=True)
            shutil.copy(os.path.join(ROOT, name), str(source / name))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(source)], check=True)
    wheel = next((tmp / "dist").glob("tf_mrc-*.whl"))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)
    return wheel, target


def test_wheel_holds_packages_data_and_commands(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(str(wheel)).namelist())
    for expected in ("run_finetune.py", "tf_mrc/experiment.py", "tf_mrc/tasks/cmrc2018.py", "export/to_pb.py",
                     "serving_demo/__main__.py", "serving_demo/static/page.html", "tf_mrc/resources/tiny/vocab.txt",
                     "tf_mrc/resources/tiny/passages.json", "serving_demo/samples/samples.json",
                     "tf_mrc/ops/native/kernels.cc"):  # the native kernels' source, compiled on first use
        assert expected in names
    entry_points = zipfile.ZipFile(str(wheel)).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert all(command in entry_points for command in COMMANDS)


def test_installed_command_runs_without_the_clone(installed, tmp_path):
    _, target = installed
    env = dict(os.environ, PYTHONPATH=str(target))
    done = subprocess.run([sys.executable, str(target / "bin" / "tf-mrc-evaluate"), "--help"], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "tf-mrc-evaluate" in done.stdout
    # the installed copy, not the clone, answered
    probe = subprocess.run([sys.executable, "-c", "import tf_mrc; print(tf_mrc.__file__)"], cwd=str(tmp_path),
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.startswith(str(target))
