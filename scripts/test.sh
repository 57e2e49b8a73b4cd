#!/usr/bin/env bash
# The test command (what CI runs): the primary-stack test suite.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
python -m pytest -q -p no:cacheprovider tests "$@"
