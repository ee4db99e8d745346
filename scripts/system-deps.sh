#!/usr/bin/env bash
# Debian packages the tests use (headless Chromium renders the HTML leaderboard report). Installs only what is
# missing; needs root, as on our machines and CI. Skipped quietly where apt-get is unavailable.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "system-deps: missing ${need[*]} (install with your package manager); dependent tests will skip" >&2
fi
