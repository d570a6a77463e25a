#!/usr/bin/env bash
# Make sure the Redis rate-limit test can run: Debian's redis-server (the test starts its own
# server on a free loopback port; nothing is configured system-wide). Installs it when missing
# and we are root with apt; otherwise says what to do and carries on (the test then skips).
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-redis: installing redis-server (for the Redis rate-limit test) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  echo "ensure-redis: $(redis-server --version | head -1)"
else
  echo "ensure-redis: redis-server missing and not installable here (needs root and apt-get);" \
       "install with: apt-get install redis-server" >&2
fi
