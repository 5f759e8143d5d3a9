#!/usr/bin/env bash
# The one benchmark command: builds lakeload (the same release build as `lakeload demo`), makes
# the bench venv (DuckDB, Polars, matplotlib, moto) once, then runs bench/bench.py with the
# arguments given: `bench/run.sh` prints the tables, `bench/run.sh --update-readme` also rewrites
# the README's Performance section and bench/performance.png, `bench/run.sh --tiny` checks
# everything still works in seconds (CI).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakeload/target}"
venv="${LAKELOAD_BENCH_VENV:-$HOME/.cache/lakeload/bench-venv}"
requirements="$root/bench/requirements.txt"
stamp="$venv/.lakeload-requirements"
if ! { [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; }; then
  echo "setting up the bench venv in $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
cargo build --release -p lakeload
exec "$venv/bin/python" "$root/bench/bench.py" "$@"
