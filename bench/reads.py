#!/usr/bin/env python3
"""What many incremental runs leave for readers, and what `lakeload optimize` gives back (run
through `bench/run.sh --reads [--tiny]`, which builds lakeload and runs this with the test venv:
`tests/setup.sh` makes it, with DuckDB's `delta` extension and Polars).

A table is built in full, then RUNS_AFTER more files of late data are loaded, one incremental run
each (the automatic compaction off), in `delta` with and without deletion vectors: each run
leaves its dates another file, and with deletion vectors the rows it superseded marked deleted.
Readers then query the table: DuckDB's `delta_scan` (a count, and a filtered aggregate) and
Polars' `scan_delta` (the same aggregate; `POLARS_DELTA_READER_FEATURE_DV=1`), best of three.
Then `lakeload optimize` compacts it, and the same queries run again.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402  (the shared measuring helpers)

RUNS_AFTER = 30

QUERIES = r"""
import glob, json, os, sys, time
os.environ["POLARS_DELTA_READER_FEATURE_DV"] = "1"
import duckdb, duckdb_extension_delta, polars as pl
table = sys.argv[1]
ext = glob.glob(os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "*", "delta.duckdb_extension"))[0]
con = duckdb.connect()
con.load_extension(ext)
def best(f):
    times = []
    for _ in range(3):
        t = time.perf_counter(); out = f(); times.append(time.perf_counter() - t)
    return min(times), out
count_s, rows = best(lambda: con.sql(f"select count(*) from delta_scan('{table}')").fetchone()[0])
agg_sql = f"select c2, count(*), sum(cast(c4 as double)) from delta_scan('{table}') where c1 < 'C001000' group by c2 order by c2"
agg_s, agg = best(lambda: con.sql(agg_sql).fetchall())
def by_polars():
    return (pl.scan_delta(table).filter(pl.col("c1") < "C001000").group_by("c2")
            .agg(pl.len(), pl.col("c4").cast(pl.Float64).sum()).sort("c2").collect().rows())
polars_s, polars = best(by_polars)
print(json.dumps({"rows": rows, "duckdb_count_s": count_s, "duckdb_agg_s": agg_s, "polars_agg_s": polars_s,
                  "agree": [list(r)[:2] for r in agg] == [list(r)[:2] for r in polars]}))
"""


def reads_python():
    venv = os.environ.get("LAKELOAD_VENV") or os.path.join(b.ROOT, ".venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        sys.exit(f"{python} is missing: run tests/setup.sh (or point LAKELOAD_VENV at its venv)")
    return python


def query(table):
    out = subprocess.run([reads_python(), "-c", QUERIES, table], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def live_files(bench, src, table, env):
    """The table's live files, as `lakeload status` counts them."""
    run_env = {**os.environ, "LAKELOAD_SOURCE_URL": src, "LAKELOAD_TARGET_URL": table, **env}
    out = subprocess.run([bench.lakeload, "status", "--json"], env=run_env, capture_output=True, text=True,
                         check=True)
    return sum(d["files"] for d in json.loads(out.stdout)["dates"])


def measure(bench, name, env, files, rows, runs_after, customers):
    src = bench.generate(f"reads-{name}", files, rows, customers=customers, span=30)
    out = os.path.join(bench.work, f"reads-{name}-table")
    env = {"LAKELOAD_TARGET_FORMAT": "delta", "LAKELOAD_OPTIMIZE_AUTO_MAX_FILES": "0",
           "LAKELOAD_OPTIMIZE_AUTO_MAX_DELETED_SHARE": "1", **env}
    bench.lakeload_run(src, out, extra_env=env)
    incremental = []
    for i in range(runs_after):
        more = bench.generate(f"reads-{name}-more-{i}", 1, max(100, rows // 20), customers=customers,
                              span=30, first_file=files + i, seed=100 + i)
        shutil.copytree(more, src, dirs_exist_ok=True)
        shutil.rmtree(more)
        incremental.append(bench.lakeload_run(src, out, mode="incremental", extra_env=env)["s"])
    before = {**query(out), "files": live_files(bench, src, out, env)}
    started = time.perf_counter()
    opt_env = {**os.environ, "LAKELOAD_SOURCE_URL": src, "LAKELOAD_TARGET_URL": out, **env}
    optimized = subprocess.run([bench.lakeload, "optimize", "--json"], env=opt_env, capture_output=True,
                               text=True, check=True)
    optimize_s = time.perf_counter() - started
    done = json.loads(optimized.stdout)
    after = {**query(out), "files": live_files(bench, src, out, env)}
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return {"incremental_s": sum(incremental) / max(1, len(incremental)), "before": before, "after": after,
            "optimize_s": optimize_s, "dates": len(done["dates"]),
            "deleted_dropped": sum(d["deleted_rows"] for d in done["dates"]),
            "files_rewritten": sum(len(d["files"]) for d in done["dates"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy sizes: checks the benchmark still works")
    ap.add_argument("--work", help="folder for the generated data (default: the system's temp folder)")
    args = ap.parse_args()
    bench = b.Bench(argparse.Namespace(work=args.work, tiny=args.tiny))
    files, rows, runs_after, customers = (4, 500, 3, 100) if args.tiny else (20, 250_000, RUNS_AFTER, 50_000)
    rows_out = []
    try:
        for name, env in [("delta", {}), ("delta + deletion vectors", {"LAKELOAD_TARGET_DELETION_VECTORS": "true"})]:
            rows_out.append((name, measure(bench, name.replace(" ", "-").replace("+", "dv"), env, files, rows,
                                           runs_after, customers)))
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    print(f"Readers after {runs_after} incremental runs, before and after `lakeload optimize` "
          f"({b.machine()}; {files} x {rows:,} lines, then {runs_after} files of {max(100, rows // 20):,}; best of 3 queries):\n")
    print("| table | mean incremental run s | live files | DuckDB count s | DuckDB filtered aggregate s | Polars same s | "
          "optimize s (dates, files rewritten, deleted rows dropped) | after: live files | DuckDB count s | aggregate s | Polars s | readers agree |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in rows_out:
        be, af = m["before"], m["after"]
        print(f"| {name} | {m['incremental_s']:.2f} | {be['files']} | {be['duckdb_count_s']:.3f} | {be['duckdb_agg_s']:.3f} | "
              f"{be['polars_agg_s']:.3f} | {m['optimize_s']:.2f} ({m['dates']}, {m['files_rewritten']}, {m['deleted_dropped']:,}) | "
              f"{af['files']} | {af['duckdb_count_s']:.3f} | {af['duckdb_agg_s']:.3f} | {af['polars_agg_s']:.3f} | "
              f"{be['agree'] and af['agree'] and be['rows'] == af['rows']} |")


if __name__ == "__main__":
    main()
