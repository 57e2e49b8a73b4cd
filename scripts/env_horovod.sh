# Sourced (instead of env.sh): the primary venv plus Horovod, for `horovodrun -np N python run_finetune.py`.
#
# Horovod 0.28.1 is compiled from source against the primary venv's TensorFlow (2.15.1), with gloo for
# the collectives and no MPI, so it runs on any host without an MPI install. It goes into its own venv,
# layered on top of the primary one through a .pth file: a failed or half-finished build never touches
# the primary venv, and the overlay is rebuilt only when the primary requirements or the pin below change.
# First build: ~5 minutes of CPU on 2 cores (measured 4m36s and, with other jobs loading the machine, 7m49s
# wall); afterwards sourcing costs nothing.
# Build steps are chained with && because `set -e` is ignored when this file is sourced as part of an
# && / || list: a failed step must never leave the overlay marked complete.
set -euo pipefail
HOROVOD_PIN="horovod==0.28.1"
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
PRIMARY_VENV="$VIRTUAL_ENV"
HVD_HASH="$(printf '%s\n%s\n' "$REQ_HASH" "$HOROVOD_PIN" | sha1sum | cut -c1-10)"
HVD_VENV="${TF_MRC_HOROVOD_VENV:-${TF_MRC_HOME:-$HOME/.cache/tf_mrc}/venv-py311-horovod-$HVD_HASH}"

hvd_build_overlay() {
  echo "[env_horovod] building $HOROVOD_PIN into $HVD_VENV (first run takes 5-8 minutes)" >&2
  rm -rf "$HVD_VENV" &&
    python -m venv "$HVD_VENV" &&
    # The overlay sees every package of the primary venv (TensorFlow first of all) after its own.
    "$HVD_VENV/bin/python" -c "import site, sys, sysconfig
purelib = sysconfig.get_paths(vars={'base': sys.argv[1], 'platbase': sys.argv[1]})['purelib']
open(site.getsitepackages()[0] + '/tf_mrc_primary_venv.pth', 'w').write(purelib + '\n')" "$PRIMARY_VENV" &&
    # Horovod's bundled gloo declares cmake_minimum_required < 3.5, which a pip-installed CMake 4 rejects;
    # the system CMake (3.25) needs nothing, and the setting is harmless for it.
    CMAKE_POLICY_VERSION_MINIMUM=3.5 HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
      HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=gloo MAKEFLAGS="-j$(nproc)" \
      "$HVD_VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-cache-dir \
        --no-binary horovod "$HOROVOD_PIN" &&
    "$HVD_VENV/bin/python" -c "import horovod.tensorflow as hvd; assert hvd.gloo_built(), 'built without gloo'" &&
    touch "$HVD_VENV/.complete"
}

if [ ! -f "$HVD_VENV/.complete" ]; then
  hvd_build_overlay || { echo "[env_horovod] building $HVD_VENV failed" >&2; return 1 2>/dev/null || exit 1; }
fi
# shellcheck disable=SC1091
source "$HVD_VENV/bin/activate"
# Fail fast instead of hanging: see tf_mrc/distributed.py for what each knob bounds. The gloo timeout must
# cover the gap between the first and the last rank reaching hvd.init() (TensorFlow import, GPU start-up).
export HOROVOD_GLOO_TIMEOUT_SECONDS="${HOROVOD_GLOO_TIMEOUT_SECONDS:-60}"
export HOROVOD_START_TIMEOUT="${HOROVOD_START_TIMEOUT:-60}"
