# Sourced by setup.sh / test.sh: activate the project's virtualenv, creating it when the requirements changed.
# The venv lives outside the clone, keyed by the requirement files' hash, so fresh clones on the same machine
# reuse it and a new machine builds it from these files alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${TF_MRC_PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
REQ_HASH="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha1sum | cut -c1-10)"
VENV="${TF_MRC_VENV:-${TF_MRC_HOME:-$HOME/.cache/tf_mrc}/venv-py311-$REQ_HASH}"
if [ ! -f "$VENV/.complete" ]; then
  echo "[env] creating $VENV (first run takes ~2 minutes)" >&2
  # Chained with &&: `set -e` is ignored when this file is sourced inside an && / || list, and a failed
  # install must never leave the venv marked complete.
  { rm -rf "$VENV" &&
    "$PYTHON" -m venv "$VENV" &&
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements.txt" \
      -r "$ROOT/requirements-dev.txt" &&
    touch "$VENV/.complete"; } || { echo "[env] creating $VENV failed" >&2; return 1 2>/dev/null || exit 1; }
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
