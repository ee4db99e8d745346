#!/usr/bin/env bash
# Before a fresh install: the virtual environment takes about 9.6 GB (torch's CUDA build and its nvidia-* wheels
# 5.5 GB, tensorflow 1.9 GB, ...). Refuse early, in one line, where it cannot fit, instead of pip's OSError minutes
# later. NEED_GB overrides the bar; SKIP_DISK_CHECK=1 skips it.
set -euo pipefail
[ "${SKIP_DISK_CHECK:-0}" = 1 ] && exit 0
dir=${1:-.}
need_gb=${NEED_GB:-10}
free_kb=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
free_gb=$(awk -v k="$free_kb" 'BEGIN {printf "%.1f", k / 1048576}')
if awk -v k="$free_kb" -v n="$need_gb" 'BEGIN {exit !(k < n * 1048576)}'; then
  echo "check-disk: the install needs about ${need_gb} GB free in $(cd "$dir" && pwd); $free_gb GB free (free space, or set SKIP_DISK_CHECK=1)" >&2
  exit 1
fi
