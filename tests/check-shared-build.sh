#!/usr/bin/env bash
# Fails when `cargo run -p lakeload` (the README's demo command) and `cargo test --workspace`
# (its test command) would build a shared dependency with different features: the second
# command would then rebuild most of the tree. The fix is an entry in the feature-unification
# block of worker/Cargo.toml. Takes a few seconds (cargo tree, no build).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import subprocess, sys

def units(args):
    """Every (package, feature set) cargo tree shows: a package built for the target and for
    the host (build scripts, proc macros) with different features appears twice."""
    out = subprocess.run(
        ["cargo", "tree", *args, "--prefix", "none", "-f", "{p}|{f}"],
        capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        if "|" not in line:
            continue
        package, feats = line.split("|", 1)
        package = package.replace(" (*)", "").replace(" (proc-macro)", "").strip()
        feats = frozenset(f for f in feats.replace("(*)", "").strip().split(",") if f)
        found.add((package, feats))
    return found

demo = units(["-p", "lakeload", "-e", "normal,build"])
tests = units(["--workspace", "-e", "normal,build,dev"])
by_package = {}
for package, feats in tests:
    by_package.setdefault(package, []).append(sorted(feats))
drift = sorted((p, sorted(f)) for p, f in demo - tests)
for package, feats in drift:
    print(f"{package}: the demo builds it with {feats}, the tests with "
          f"{' or '.join(map(str, by_package.get(package, [])))}", file=sys.stderr)
if drift:
    print("the demo and the tests would build these dependencies twice; add the features to "
          "the feature-unification block of worker/Cargo.toml", file=sys.stderr)
    sys.exit(1)
PY
