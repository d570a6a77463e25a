#!/usr/bin/env bash
# Make sure the browser test can run: Debian's headless Chromium and its matching chromedriver.
# Installs them when missing and we are root with apt; otherwise says what to do and carries on
# (without /usr/bin/chromium the browser test skips). Never downloads a browser any other way.
set -euo pipefail

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: installing ${missing[*]} (for the browser test) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  echo "ensure-chromium: $(/usr/bin/chromium --version 2>/dev/null | head -1)"
else
  echo "ensure-chromium: ${missing[*]} missing and not installable here (needs root and" \
       "apt-get); install with: apt-get install chromium chromium-driver" >&2
fi
