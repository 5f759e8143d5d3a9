#!/usr/bin/env bash
# Creates the test venv (.venv, or $LAKELOAD_VENV) with the S3 server (moto) and DuckDB.
# Idempotent: does nothing when the venv already has the pinned versions.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${LAKELOAD_VENV:-$root/.venv}"
requirements="$root/tests/requirements.txt"
stamp="$venv/.lakeload-requirements"
if [ -x "$venv/bin/moto_server" ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi
echo "setting up the test venv in $venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
