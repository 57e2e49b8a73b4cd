#!/usr/bin/env bash
# Install what the demo page's browser test needs, when missing: Debian's Chromium (the test drives it headless
# through the DevTools protocol over a pipe, so no Python package is needed) and a CJK font (Chinese renders as
# boxes without one). Best effort and bounded in time: where apt-get cannot run (no root, offline) the browser
# test skips and says why. Called by scripts/test.sh before the legs.
set -uo pipefail
LIMIT="${TF_MRC_BROWSER_DEPS_TIMEOUT:-300}"  # seconds for apt-get update, and again for the install
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing+=(fonts-noto-cjk)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[browser-deps] apt-get install ${missing[*]}"
    timeout "$LIMIT" apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive timeout "$LIMIT" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null ||
      echo "[browser-deps] could not install ${missing[*]}: the browser test will skip"
  else
    echo "[browser-deps] ${missing[*]} missing and apt-get needs root here: the browser test will skip"
  fi
fi
exit 0
