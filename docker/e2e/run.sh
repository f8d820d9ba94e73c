#!/usr/bin/env bash
# Opt-in e2e check against the REAL pict-rs 0.5 and Lemmy 0.19 (see README.md).
# UNTESTED on pictguard's development machines: they have no container engine.
#
#   docker/e2e/run.sh            # build, start, check, tear down
#   KEEP=1 docker/e2e/run.sh     # leave the stack running afterwards
#   docker/e2e/run.sh --strict   # JSON shape differences between real and fakes fail too
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
compose=(docker compose -f "$here/compose.yml")

cleanup() {
  "${compose[@]}" logs --no-color >"$here/work/compose.log" 2>&1 || true
  if [ "${KEEP:-0}" != 1 ]; then "${compose[@]}" down -v --remove-orphans; fi
}

"$python" "$here/driver.py" prepare --work "$here/work"
"${compose[@]}" build pictguard
trap cleanup EXIT
# The blocklist entry goes in before pictguard starts (same state volume as `serve`).
"${compose[@]}" run --rm --no-deps pictguard --config /etc/pictguard/config.yaml \
  hashes add --block /e2e/blocked.png --reason "e2e: harmless generated image"
"${compose[@]}" up -d
"$python" "$here/driver.py" check --work "$here/work" "$@"
