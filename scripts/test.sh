#!/usr/bin/env bash
# The test command (what CI runs, through .ci/run). Three legs, in order, each in its own environment:
#   primary  the whole suite on Python 3.11 + TF 2.15.1                  (scripts/env.sh)
#   horovod  the 2-rank Horovod tests, gloo, on the same TF              (scripts/env_horovod.sh: + Horovod 0.28.1)
#   legacy   the whole suite on the user's stack: Python 3.7 + TF 1.13.1 + Horovod 0.19.5 over MPI
#            (scripts/env_tf1.sh); what needs torch or transformers (not pinned there) skips itself.
# Environments are built on first use and cached under ~/.cache/tf_mrc (see each env script for its time).
#
#   bash scripts/test.sh             all three legs
#   bash scripts/test.sh --quick     the primary leg only (a developer's loop)
#   bash scripts/test.sh -k xlnet    further arguments go to every leg's pytest
#
# Every leg prints its wall time; the exit status is non-zero when any leg failed (or could not start), and
# the last line counts all legs, "N passed, M failed", M including errors and legs that did not run.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
if [ "${1:-}" = "--quick" ]; then
  QUICK=1
  shift
fi
LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT
STARTED=$SECONDS
PASSED=0
FAILED=0
SUMMARIES=()
STATUS=0

count() {  # count WORD LINE -> the number before WORD in pytest's closing line (0 when absent)
  local found
  found="$(grep -oE "[0-9]+ $1" <<<"$2" | head -n1 | cut -d' ' -f1)"
  echo "${found:-0}"
}

leg() {  # leg NAME ENV_SCRIPT PYTEST_ARGS...
  local name="$1" env_script="$2"
  shift 2
  local log="$LOGS/$name.log" started=$SECONDS status=0 closing
  echo "[test] ===== leg $name: source scripts/$env_script; python -m pytest $* ====="
  # A subshell: each leg's environment (venv, PYTHONPATH, set -e of the env scripts) stays its own.
  (source "$ROOT/scripts/$env_script" && cd "$ROOT" && python -m pytest -q -p no:cacheprovider "$@") 2>&1 |
    tee "$log" || status=$?
  local seconds=$((SECONDS - started))
  closing="$(grep -E "[0-9]+ (passed|failed|errors?|skipped|deselected)|no tests ran" "$log" | tail -n1 | tr -d '=')"
  if ! grep -qE " in [0-9.]+s" <<<"$closing"; then
    closing="did not run to the end (exit $status)"
    FAILED=$((FAILED + 1))
  else
    PASSED=$((PASSED + $(count passed "$closing")))
    FAILED=$((FAILED + $(count failed "$closing") + $(count error "$closing")))
  fi
  # pytest's 5 means nothing was selected in this leg (e.g. -k matched only tests of another leg)
  [ "$status" = 0 ] || [ "$status" = 5 ] || STATUS=1
  local line
  line="$(printf "[test] leg %-8s %3dm%02ds  exit %d  %s" "$name" $((seconds / 60)) $((seconds % 60)) "$status" \
    "$(echo "$closing" | sed 's/^ *//')")"
  echo "$line"
  SUMMARIES+=("$line")
}

# The demo page's browser test needs Chromium and a CJK font: installed here when missing (bounded in time; the
# test skips with the reason where they cannot be installed).
bash "$ROOT/scripts/browser_deps.sh"
leg primary env.sh tests "$@"
if [ "$QUICK" = 0 ]; then
  leg horovod env_horovod.sh tests/test_distributed.py tests/test_horovod_run.py "$@"
  leg legacy env_tf1.sh tests "$@"
fi
TOTAL=$((SECONDS - STARTED))
echo "[test] ===== summary ====="
printf "%s\n" "${SUMMARIES[@]}"
printf "[test] all legs %dm%02ds\n" $((TOTAL / 60)) $((TOTAL % 60))
echo "$PASSED passed, $FAILED failed"
exit $STATUS
