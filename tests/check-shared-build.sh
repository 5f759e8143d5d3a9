#!/usr/bin/env bash
# Fails when `cargo run -p lakeload` (the README's demo command) and `cargo test --workspace`
# (its test command) would build a shared dependency with different features: the second
# command would then rebuild most of the tree. The fix is an entry in the feature-unification
# block of worker/Cargo.toml. Takes a few seconds (cargo tree, no build).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import subprocess, sys

def features(args):
    out = subprocess.run(
        ["cargo", "tree", *args, "--target", "all", "--prefix", "none", "-f", "{p}|{f}"],
        capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        package, feats = line.split("|", 1)
        package = package.replace(" (*)", "").strip()
        found.setdefault(package, set()).update(
            f for f in feats.replace("(*)", "").strip().split(",") if f)
    return found

demo = features(["-p", "lakeload", "-e", "normal,build"])
tests = features(["--workspace", "-e", "normal,build,dev"])
drift = [(p, sorted(tests.get(p, set()) - f), sorted(f - tests.get(p, set())))
         for p, f in sorted(demo.items()) if f != tests.get(p, set())]
for package, missing, extra in drift:
    print(f"{package}: the demo build lacks {missing}, has extra {extra}", file=sys.stderr)
if drift:
    print("the demo and the tests would build these dependencies twice; add the features to "
          "the feature-unification block of worker/Cargo.toml", file=sys.stderr)
    sys.exit(1)
PY
