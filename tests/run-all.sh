#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, and end-to-end tests of the built binaries
# against local folders and a real S3-compatible server (moto on 127.0.0.1).
# First run on a fresh machine: creates the test venv and builds everything (~20 min on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tests/setup.sh
cargo test --release --workspace "$@"
