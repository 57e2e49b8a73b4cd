# Sourced: the legacy stack the user pinned (Python 3.7 + TF 1.13.1 + Horovod 0.19.5 over MPI), built once
# into a venv outside the clone keyed by requirements-tf1.txt and the Horovod pin below.
#
#   source scripts/env_tf1.sh; python -m pytest -q tests
#   source scripts/env_tf1.sh; horovodrun -np 2 -H localhost:2 python run_finetune.py ...
#
# Measured here (2 cores, other jobs running): Open MPI from Debian ~20 s (only when mpirun is missing);
# venv + packages + Horovod 3m10s wall, of which the Python packages ~40 s and the Horovod 0.19.5 build
# ~1.5 min of CPU (3m41s wall on the loaded machine). Horovod 0.19.5's bundled gloo does not compile against current kernel headers,
# and Horovod >= 0.20 needs TF >= 1.15, so this stack uses MPI (mpirun) for its collectives.
# Every build step is chained with && because `set -e` is ignored when this file is sourced as part of an
# && / || list: a failed step must never leave a venv marked complete.
set -euo pipefail
HOROVOD_PIN="horovod==0.19.5"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ_HASH="$( (cat "$ROOT/requirements-tf1.txt"; echo "$HOROVOD_PIN") | sha1sum | cut -c1-10)"
VENV="${TF_MRC_TF1_VENV:-${TF_MRC_HOME:-$HOME/.cache/tf_mrc}/venv-py37-tf1-$REQ_HASH}"
if [ "$(id -u)" = 0 ]; then
  # Open MPI refuses to run as root unless told twice; CI and containers here run as root.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

tf1_python37() {
  # An interpreter that really runs (a pyenv shim for an inactive version does not).
  local candidate
  for candidate in "${TF_MRC_PYTHON37:-}" python3.7 "$HOME"/.pyenv/versions/3.7.*/bin/python3.7; do
    if [ -n "$candidate" ] && "$candidate" -c "import sys; assert sys.version_info[:2] == (3, 7)" 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "[env_tf1] no working Python 3.7 found (set TF_MRC_PYTHON37 to one)" >&2
  return 1
}

tf1_install_mpi() {
  command -v mpirun >/dev/null 2>&1 && command -v mpicxx >/dev/null 2>&1 && return 0
  echo "[env_tf1] installing Open MPI (openmpi-bin libopenmpi-dev)" >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
}

tf1_build_venv() {
  local python37
  python37="$(tf1_python37)" && tf1_install_mpi || return 1
  echo "[env_tf1] creating $VENV (first run takes ~3-4 minutes)" >&2
  rm -rf "$VENV" &&
    "$python37" -m venv "$VENV" &&
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements-tf1.txt" &&
    # Built from source against the TF just installed; MPI only (see above).
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 \
      HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=MPI \
      "$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-cache-dir \
        --no-binary horovod "$HOROVOD_PIN" &&
    "$VENV/bin/python" -c "import horovod.tensorflow as hvd; assert hvd.mpi_built(), 'built without MPI'" &&
    touch "$VENV/.complete"
}

if [ ! -f "$VENV/.complete" ]; then
  tf1_build_venv || { echo "[env_tf1] building $VENV failed" >&2; return 1 2>/dev/null || exit 1; }
fi
# Also with the venv cached: horovodrun needs mpirun at run time (a fresh container over a kept cache).
tf1_install_mpi || { echo "[env_tf1] installing Open MPI failed" >&2; return 1 2>/dev/null || exit 1; }
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
