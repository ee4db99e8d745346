#!/usr/bin/env bash
# Debian packages the tests use: headless Chromium renders the HTML leaderboard report; PostgreSQL's server binaries
# let tests/test_backends.py run its own throw-away server (an Optuna study in postgresql://). Installs only what is
# missing; needs root, as on our machines and CI. Skipped quietly where apt-get is unavailable.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<version>/bin
command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # the tests start their own server on a temp dir: the package must not create and start a system one on 5432
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/isp-search-no-main.conf
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "system-deps: missing ${need[*]} (install with your package manager); dependent tests will skip" >&2
fi
