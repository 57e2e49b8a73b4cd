#!/usr/bin/env bash
# Set everything up (the cached venv, then this project installed into it with its console commands
# tf-mrc-finetune, tf-mrc-evaluate, ...), then run the main job on the embedded default.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation "$ROOT" ||
  { echo "[setup] pip install of the project failed" >&2; exit 1; }
python run_finetune.py "$@"
