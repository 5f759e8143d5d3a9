#!/usr/bin/env python3
"""What one more file costs when data arrives late: an incremental run of one file against a
full run, on shapes where each file carries rows for many past dates (run through
`bench/run.sh --late [--tiny]`, which builds lakeload and the bench venv).

For each shape the table is built in full, then one more file (3-5 % more lines, generated
like the others) is loaded incrementally, for both of lakeload's formats; beside it, DuckDB and
Polars doing the same incremental merge by hand on a table their own full job built: read the
new file, read back the partitions of the dates it touches, keep the latest row per key (new
rows win), write those partitions again. Times are the best of RUNS runs, each on a fresh copy
of the built table; peak memory is the process's maximum RSS.
"""
import argparse
import glob
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402  (the shared measuring helpers and full jobs)

RUNS = 2

# (name, what, `lakeload generate` options of the table, options of the one more file).
SHAPES = [
    ("new-keys", "16 M lines over 60 days, 2 M customers (new rows mostly new keys)",
     dict(files=32, rows=500_000, span=60, customers=2_000_000),
     dict(first_file=32, seed=9)),
    ("updates", "10 M lines over 30 days, 50 k customers (new rows mostly update keys)",
     dict(files=20, rows=500_000, span=30, customers=50_000),
     dict(first_file=20, seed=9)),
    ("only-new-keys", "16 M lines over 60 days, keys from a space of 2 M customers x 1 M sessions (new rows all new keys)",
     dict(files=32, rows=500_000, span=60, customers=2_000_000, sessions=1_000_000),
     dict(first_file=32, seed=9)),
    ("window", "10 M lines, a file a day for 30 days, each the day plus a tail of the 7 before",
     dict(files=30, rows=333_000, files_per_day=1, customers=200_000),
     dict(first_file=30, seed=9)),
]

# The incremental merge by hand in DuckDB: the new file's rows and the stored rows of the dates
# they touch, the latest per key (new rows first), written back over those dates.
DUCKDB_MERGE = r"""
import duckdb, glob, os, shutil, sys
table, new_glob, staging, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute(f'''
CREATE TEMP TABLE new AS
  SELECT c1, c2, c3, c4, c5,
    CAST(try_strptime(left(trim(c6), 10), '%Y-%m-%d') AS DATE) AS c6,
    CAST(try_strptime(left(trim(c7), 10), '%Y-%m-%d') AS DATE) AS c7,
    c8, filename AS _source_file
  FROM read_csv('{new_glob}', delim='|', header=false, quote='', escape='',
    columns={{'c1':'VARCHAR','c2':'VARCHAR','c3':'VARCHAR','c4':'VARCHAR','c5':'VARCHAR','c6':'VARCHAR','c7':'VARCHAR','c8':'VARCHAR'}},
    filename=true, ignore_errors=true, null_padding=false)
  WHERE c7 IS NOT NULL AND try_strptime(left(trim(c7), 10), '%Y-%m-%d') IS NOT NULL
''')
dates = [d for (d,) in con.execute("SELECT DISTINCT c7 FROM new").fetchall()]
parts = [os.path.join(table, f"year={d.year}", f"month={d.month}", f"day={d.day}") for d in dates]
stored = [f for p in parts for f in glob.glob(os.path.join(p, "*.parquet"))]
old = (f"SELECT * EXCLUDE (year, month, day), 0 AS prio FROM read_parquet({stored!r}, hive_partitioning=true)"
       if stored else "SELECT *, 0 AS prio FROM new WHERE false")
con.execute(f'''
COPY (
  SELECT * EXCLUDE (prio), year(c7) AS year, month(c7) AS month, day(c7) AS day FROM (
    {old}
    UNION ALL BY NAME SELECT *, 1 AS prio FROM new
  ) QUALIFY row_number() OVER (PARTITION BY c1, c7, c8 ORDER BY prio DESC, _source_file DESC) = 1
) TO '{staging}' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (year, month, day))
''')
for part in parts:
    shutil.rmtree(part, ignore_errors=True)
    staged = os.path.join(staging, os.path.relpath(part, table))
    os.makedirs(os.path.dirname(part), exist_ok=True)
    shutil.move(staged, part)
"""

# The same by hand in Polars.
POLARS_MERGE = r"""
import glob, os, shutil, sys
import polars as pl
table, new_glob, staging = sys.argv[1], sys.argv[2], sys.argv[3]
names = [f"c{i}" for i in range(1, 9)]
date = lambda c: pl.col(c).str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
new = pl.concat([
    pl.read_csv(f, separator="|", has_header=False, quote_char=None, new_columns=names,
                schema_overrides={n: pl.String for n in names}, ignore_errors=True,
                truncate_ragged_lines=True, encoding="utf8-lossy")
      .with_row_index("_source_line", offset=1)
      .with_columns(pl.lit(f).alias("_source_file"))
    for f in sorted(glob.glob(new_glob, recursive=True))
]).with_columns(date("c6").alias("c6"), date("c7").alias("c7")).filter(pl.col("c7").is_not_null())
dates = new.get_column("c7").unique().to_list()
parts = [os.path.join(table, f"year={d.year}", f"month={d.month}", f"day={d.day}") for d in dates]
stored = [f for p in parts for f in glob.glob(os.path.join(p, "*.parquet"))]
frames = [new.with_columns(pl.lit(1).alias("prio"))]
if stored:
    old = pl.read_parquet(stored, hive_partitioning=False).with_columns(pl.lit(0).alias("prio"))
    frames.insert(0, old.select(frames[0].columns))
merged = (
    pl.concat(frames, how="vertical_relaxed")
    .sort(["prio", "_source_file", "_source_line"])
    .unique(subset=["c1", "c7", "c8"], keep="last", maintain_order=False)
    .drop("prio")
    .with_columns(pl.col("c7").dt.year().alias("year"), pl.col("c7").dt.month().alias("month"),
                  pl.col("c7").dt.day().alias("day"))
)
merged.write_parquet(staging, compression="snappy", partition_by=["year", "month", "day"])
for part in parts:
    shutil.rmtree(part, ignore_errors=True)
    staged = os.path.join(staging, os.path.relpath(part, table))
    os.makedirs(os.path.dirname(part), exist_ok=True)
    shutil.move(staged, part)
"""


def fresh_copy(built, out):
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(built, out)


def by_hand(tool, src_glob, built, work):
    """The incremental merge by hand with `tool`, best of RUNS, each on a fresh copy."""
    out, staging = os.path.join(work, f"{tool}-table"), os.path.join(work, f"{tool}-staging")

    def once():
        fresh_copy(built, out)
        shutil.rmtree(staging, ignore_errors=True)
        script = DUCKDB_MERGE if tool == "duckdb" else POLARS_MERGE
        args = [out, src_glob, staging] + ([str(os.cpu_count() or 2)] if tool == "duckdb" else [])
        return b.measure([sys.executable, "-c", script] + args, may_fail=True)

    m = b.best_of(RUNS, once)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return {"s": m["s"], "rss_mib": m["rss"], "rc": m["rc"], "err": (m.get("err") or "")[-300:]}


def full_by(tool, src, out):
    cores = os.cpu_count() or 2
    script, args = (b.DUCKDB_JOB, [src, out, str(cores)]) if tool == "duckdb" else (b.POLARS_JOB, [src, out])
    return b.measure([sys.executable, "-c", script] + args)


def measure_shape(bench, name, what, table_opts, more_opts, tiny):
    table_opts, more_opts = dict(table_opts), dict(more_opts)
    files, rows = table_opts.pop("files"), table_opts.pop("rows")
    if tiny:
        rows = max(200, rows // 2000)
        table_opts["customers"] = max(100, table_opts["customers"] // 2000)
    src = bench.generate(f"late-{name}", files, rows, **table_opts)
    new_src = os.path.join(bench.work, f"late-{name}-new")
    # The one more file, generated into its own folder too (for the by-hand merges) and copied
    # into the source (for lakeload, which finds what is new itself).
    bench.generate(f"late-{name}-new", 1, rows, **{**table_opts, **more_opts})
    row = {"shape": what}
    for fmt, env in FORMATS:
        out = os.path.join(bench.work, f"late-{name}-{fmt}")
        built = out + "-built"

        def full_once():
            shutil.rmtree(out, ignore_errors=True)
            return bench.lakeload_run(src, out, extra_env=env)

        full = b.best_of(1 if tiny else RUNS, full_once)
        shutil.copytree(out, built)
        shutil.copytree(new_src, src, dirs_exist_ok=True)

        def inc_once():
            fresh_copy(built, out)
            return bench.lakeload_run(src, out, mode="incremental", extra_env=env)

        inc = b.best_of(1 if tiny else RUNS, inc_once)
        row[fmt] = {
            "full_s": full["s"], "inc_s": inc["s"], "inc_rss_mib": inc["rss"],
            "lines": full["summary"]["rows_read"], "new_lines": inc["summary"]["rows_read"],
            "dates": len(inc["summary"]["dates_written"]),
            "inserted": inc["summary"].get("rows_inserted"), "updated": inc["summary"].get("rows_updated"),
            "table_dates": len(full["summary"]["dates_written"]),
        }
        # The next format starts from the table's files without the new one.
        for f in glob.glob(os.path.join(new_src, "**", "*.gz"), recursive=True):
            os.remove(os.path.join(src, os.path.relpath(f, new_src)))
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(built, ignore_errors=True)
    new_glob = os.path.join(new_src, "**", "*.gz")
    for tool in ("duckdb", "polars"):
        built = os.path.join(bench.work, f"late-{name}-{tool}-built")
        full = full_by(tool, src, built)
        row[tool] = {"full_s": full["s"], **by_hand(tool, new_glob, built, bench.work)}
        shutil.rmtree(built, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(new_src, ignore_errors=True)
    return row


# lakeload's table formats, with the settings each is run with.
FORMATS = [
    ("parquet", {"LAKELOAD_TARGET_FORMAT": "parquet"}),
    ("delta", {"LAKELOAD_TARGET_FORMAT": "delta"}),
    ("delta + deletion vectors", {"LAKELOAD_TARGET_FORMAT": "delta", "LAKELOAD_TARGET_DELETION_VECTORS": "true"}),
]


def share(part, whole):
    return f"{part / whole:.2f}" if whole else "-"


def table(rows):
    out = ["| shape | tool | lines (+ new) | dates | full run s | +1 file s | share of a full run | dates rewritten | new rows inserted / updating | peak MiB |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for fmt, _ in FORMATS:
            m = r[fmt]
            out.append(f"| {r['shape']} | lakeload {fmt} | {m['lines']:,} (+{m['new_lines']:,}) | {m['table_dates']} | "
                       f"{m['full_s']:.2f} | {m['inc_s']:.2f} | {share(m['inc_s'], m['full_s'])} | {m['dates']} | "
                       f"{m['inserted']:,} / {m['updated']:,} | {m['inc_rss_mib']:.0f} |")
        for tool in ("duckdb", "polars"):
            m = r[tool]
            inc = f"{m['s']:.2f}" if m["rc"] == 0 else f"failed ({m['err'].strip().splitlines()[-1] if m['err'].strip() else m['rc']})"
            out.append(f"| {r['shape']} | {tool} by hand | | | {m['full_s']:.2f} | {inc} | "
                       f"{share(m['s'], m['full_s']) if m['rc'] == 0 else '-'} | | | {m['rss_mib']:.0f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy sizes: checks the benchmark still works")
    ap.add_argument("--work", help="folder for the generated data (default: the system's temp folder)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--shape", action="append", choices=[s[0] for s in SHAPES],
                    help="only this shape (repeatable; default: every shape)")
    args = ap.parse_args()
    bench = b.Bench(argparse.Namespace(work=args.work, tiny=args.tiny))
    shapes = [s for s in SHAPES if not args.shape or s[0] in args.shape]
    try:
        rows = [measure_shape(bench, *shape, args.tiny) for shape in shapes]
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    print(f"Late data, one more file ({b.machine()}; best of {1 if args.tiny else RUNS}):\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
