#!/usr/bin/env python3
"""Benchmark: lakeload against DuckDB doing the same job, side by side on the same files.

Generates synthetic source files with `lakeload generate`, then times, for each tool, a full load
into a date-partitioned snappy Parquet table with the latest row per key (c1, c7, c8), and for
lakeload also an incremental run that adds two files. Prints wall time, rows/s and peak memory
(max RSS of the child process), and the ratios. Usage:

    bench/compare.py [--files 24] [--rows 200000] [--repeat 3]

Needs the release binary (cargo build --release) and the test venv (tests/setup.sh), whose
Python has DuckDB.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DUCKDB_SCRIPT = r"""
import duckdb, sys
src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute(f'''
COPY (
  WITH raw AS (
    SELECT *, filename FROM read_csv('{src}/**/*.gz', delim='|', header=false, quote='', escape='',
      columns={{'c1':'VARCHAR','c2':'VARCHAR','c3':'VARCHAR','c4':'VARCHAR','c5':'VARCHAR','c6':'VARCHAR','c7':'VARCHAR','c8':'VARCHAR'}},
      filename=true, ignore_errors=true, null_padding=false)
  ),
  typed AS (
    SELECT c1, c2, c3, c4, c5,
      CAST(try_strptime(left(trim(c6), 10), '%Y-%m-%d') AS DATE) AS c6,
      CAST(try_strptime(left(trim(c7), 10), '%Y-%m-%d') AS DATE) AS c7,
      c8, filename AS _source_file
    FROM raw WHERE c7 IS NOT NULL
  ),
  latest AS (
    SELECT * FROM typed WHERE c7 IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY c1, c7, c8 ORDER BY _source_file DESC) = 1
  )
  SELECT *, year(c7) AS year, month(c7) AS month, day(c7) AS day FROM latest
) TO '{out}' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (year, month, day))
''')
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    lakeload = os.path.join(target, "release", "lakeload")
    venv = os.environ.get("LAKELOAD_VENV", os.path.join(ROOT, ".venv"))
    python = os.path.join(venv, "bin", "python")
    for path, hint in [(lakeload, "cargo build --release"), (python, "tests/setup.sh")]:
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run {hint}")
    threads = os.cpu_count() or 2

    work = tempfile.mkdtemp(prefix="lakeload-bench-")
    src = os.path.join(work, "src")
    subprocess.run([lakeload, "generate", src, "--files", str(args.files), "--rows", str(args.rows),
                    "--files-per-day", "2", "--bad-ratio", "0.0005"], check=True, stdout=subprocess.DEVNULL)
    lines = args.files * args.rows
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(src) for f in fs)
    print(f"input: {args.files} files, {lines:,} lines, {size / 2**20:.1f} MiB gzip, {threads} cores; "
          f"best of {args.repeat}")

    results = {}
    for name, make_cmd in [
        ("lakeload full", lambda out: ([lakeload, "run", "--mode", "full", "--json"], {
            **os.environ, "LAKELOAD_SOURCE_URL": src, "LAKELOAD_TARGET_URL": out})),
        ("duckdb", lambda out: ([python, "-c", DUCKDB_SCRIPT, src, out, str(threads)], None)),
    ]:
        best = None
        for _ in range(args.repeat):
            out = os.path.join(work, "out-" + name.split()[0])
            shutil.rmtree(out, ignore_errors=True)
            cmd, env = make_cmd(out)
            # A fresh measuring process per run so each peak RSS is that run's own.
            wrapper = [sys.executable, "-c", (
                "import resource,subprocess,sys,time,json;"
                "t=time.perf_counter();p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
                "d=time.perf_counter()-t;"
                "print(json.dumps({'s':d,'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,"
                "'rc':p.returncode,'err':p.stderr[-2000:]}))")] + cmd
            proc = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=True)
            m = json.loads(proc.stdout.strip().splitlines()[-1])
            if m["rc"] != 0:
                sys.exit(f"{name} failed: {m['err']}")
            if best is None or m["s"] < best["s"]:
                best = m
        results[name] = best
        print(f"  {name:<16} {best['s']:7.2f} s  {lines / best['s'] / 1e6:6.2f} M lines/s  "
              f"peak {best['rss']:7.0f} MiB")

    # Incremental: two more files on the lakeload table built above.
    subprocess.run([lakeload, "generate", src, "--files", "2", "--rows", str(args.rows), "--files-per-day", "2",
                    "--first-file", str(args.files), "--seed", "9"], check=True, stdout=subprocess.DEVNULL)
    env = {**os.environ, "LAKELOAD_SOURCE_URL": src, "LAKELOAD_TARGET_URL": os.path.join(work, "out-lakeload")}
    t = time.perf_counter()
    proc = subprocess.run([lakeload, "run", "--json"], env=env, capture_output=True, text=True, check=True)
    inc = time.perf_counter() - t
    summary = json.loads(proc.stdout)
    print(f"  lakeload incremental (+2 files, {len(summary['dates_written'])} dates rewritten) {inc:6.2f} s")

    l, d = results["lakeload full"], results["duckdb"]
    print(f"ratios: lakeload/duckdb time {l['s'] / d['s']:.2f}x, peak memory {l['rss'] / d['rss']:.2f}x; "
          f"incremental/full time {inc / l['s']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
