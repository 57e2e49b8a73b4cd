#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default (tiny encoder, shipped passages).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
python run_finetune.py "$@"
