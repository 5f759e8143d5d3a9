#!/usr/bin/env bash
# The one benchmark command: builds lakeload (the same release build as `lakeload demo`), makes
# the bench venv (DuckDB, Polars, matplotlib, moto) once, then runs bench/bench.py with the
# arguments given: `bench/run.sh` prints the tables, `bench/run.sh --update-readme` also rewrites
# the README's Performance section and bench/performance.png, `bench/run.sh --tiny` checks
# everything still works in seconds (CI); `bench/run.sh --history [--tiny]` measures commands on
# years of Delta history (bench/history.py); `bench/run.sh --late [--tiny]` what one more file
# of late data costs against a full run, beside DuckDB and Polars merging it by hand
# (bench/late.py); `bench/run.sh --reads [--tiny]` reader query times after 30 incremental runs,
# before and after `lakeload optimize` (bench/reads.py; its readers come from the test venv,
# tests/setup.sh).
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
# `--history`: the memory of lakeload's commands on years of Delta history (bench/history.py).
if [ "${1:-}" = --history ]; then
  shift
  LAKELOAD_BENCH_VENV="$venv" exec "$venv/bin/python" "$root/bench/history.py" "$@"
fi
if [ "${1:-}" = --late ]; then
  shift
  exec "$venv/bin/python" "$root/bench/late.py" "$@"
fi
if [ "${1:-}" = --reads ]; then
  shift
  exec "$venv/bin/python" "$root/bench/reads.py" "$@"
fi
exec "$venv/bin/python" "$root/bench/bench.py" "$@"
