#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, and end-to-end tests of the built binaries
# against local folders, a real S3-compatible server (moto on 127.0.0.1) and a real
# kube-apiserver + etcd (built from source, tests/controlplane).
# First run on a fresh machine: creates the test venv and builds everything (~40 min on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tests/setup.sh
# The operator tests need a real kube-apiserver and etcd: built from source once per machine
# (~20 min on 2 cores the first time), then taken from $HOME/.cache/lakeload/controlplane.
bash tests/controlplane/build.sh >/dev/null
# The chart tests run `helm lint` / `helm template` with a helm built the same way.
bash tests/helm/build.sh >/dev/null
cargo test --release --workspace "$@"
