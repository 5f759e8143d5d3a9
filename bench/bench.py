#!/usr/bin/env python3
"""lakeload's benchmarks, side by side with the same job done by DuckDB and by Polars.

Run through bench/run.sh (it builds lakeload and the bench venv). Every figure comes from this
run on this machine: the same generated files go to every tool, each tool runs in a fresh
process, and peak memory is that process's maximum RSS.

  1. Full refresh: wall time, MB/s, peak RSS of lakeload, a DuckDB statement, a Polars script,
     and the decompression floor (every .gz inflated to /dev/null on all cores), with ratios.
     Shapes: late data (every file spans every date), mostly distinct keys, one date, 2 KB
     rows, beside the reference shape: each tool at its defaults and, at a memory limit where
     both must spill, lakeload and DuckDB at equal memory; the disk's own sequential speed.
  2. Scaling: 1x, 4x, 16x the rows, and every row on one date with mostly distinct keys.
  3. Incremental: one file added to tables built from 25 and from 100 files.
  4. S3: the full refresh through a local S3 server (moto), beside that server's own ceiling.

`--update-readme` rewrites the README's Performance section and bench/performance.png.
`--tiny` runs every step at a toy size (CI does, to keep the benchmarks working).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20

# The job, as a data engineer would write it in DuckDB: same input, same rules (dates parsed,
# latest row per key c1, c7, c8, one snappy Parquet folder per date).
DUCKDB_JOB = r"""
import duckdb, sys
src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
if len(sys.argv) > 4:  # a memory limit (and where to spill), for runs at equal memory
    con.execute(f"SET memory_limit = '{sys.argv[4]}'")
    con.execute(f"SET temp_directory = '{sys.argv[5]}'")
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
    FROM raw
  ),
  latest AS (
    SELECT * FROM typed WHERE c7 IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY c1, c7, c8 ORDER BY _source_file DESC) = 1
  )
  SELECT *, year(c7) AS year, month(c7) AS month, day(c7) AS day FROM latest
) TO '{out}' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (year, month, day))
''')
"""

# The same job as a Polars script: lazy scan of every file, line numbers per file, latest row
# per key by (file, line), partitioned snappy Parquet.
POLARS_JOB = r"""
import glob, os, sys
import polars as pl
src, out = sys.argv[1], sys.argv[2]
names = [f"c{i}" for i in range(1, 9)]
files = sorted(glob.glob(os.path.join(src, "**", "*.gz"), recursive=True))
frames = [
    pl.read_csv(f, separator="|", has_header=False, quote_char=None, new_columns=names,
                schema_overrides={n: pl.String for n in names}, ignore_errors=True,
                truncate_ragged_lines=True, encoding="utf8-lossy")
      .lazy()
      .with_row_index("_source_line", offset=1)
      .with_columns(pl.lit(os.path.relpath(f, src)).alias("_source_file"))
    for f in files
]
date = lambda c: pl.col(c).str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
table = (
    pl.concat(frames)
    .with_columns(date("c6").alias("c6"), date("c7").alias("c7"))
    .filter(pl.col("c7").is_not_null())
    .sort(["_source_file", "_source_line"])
    .unique(subset=["c1", "c7", "c8"], keep="last", maintain_order=False)
    .with_columns(pl.col("c7").dt.year().alias("year"), pl.col("c7").dt.month().alias("month"),
                  pl.col("c7").dt.day().alias("day"))
    .collect()
)
table.write_parquet(out, compression="snappy", partition_by=["year", "month", "day"])
"""

# Runs a command in a fresh child and reports its wall time and maximum RSS.
MEASURE = (
    "import resource,subprocess,sys,time,json;"
    "t=time.perf_counter();p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
    "d=time.perf_counter()-t;"
    "print(json.dumps({'s':d,'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,"
    "'rc':p.returncode,'out':p.stdout[-20000:],'err':p.stderr[-3000:]}))"
)


# Timed runs per measurement in the full-refresh and incremental tables: the fastest counts (on a
# shared machine noise only ever adds time), peak memory is the highest of them.
RUNS = 3


def best_of(runs, once):
    """Calls `once()` (a measurement) `runs` times: the fastest, with the highest peak RSS (a
    failed run counts only when every run failed)."""
    results = [once() for _ in range(runs)]
    succeeded = [m for m in results if not m.get("failed")] or results
    best = min(succeeded, key=lambda m: m["s"])
    return {**best, "rss": max(m["rss"] for m in results)}


def measure(cmd, env=None, expect_rc=0, may_fail=False):
    """`may_fail`: a failed run is returned (with `failed` set to its last error line) instead
    of stopping the bench, e.g. DuckDB out of memory at a memory limit."""
    proc = subprocess.run([sys.executable, "-c", MEASURE] + cmd, env=env, capture_output=True,
                          text=True, check=True)
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    if may_fail and m["rc"] != expect_rc:
        lines = [l for l in m["err"].splitlines() if "Error" in l] or m["err"].splitlines()[-1:]
        return {**m, "failed": (lines[-1] if lines else f"exit {m['rc']}").strip()[:120]}
    if m["rc"] != expect_rc:
        sys.exit(f"failed ({m['rc']}): {' '.join(cmd)}\n{m['err']}")
    return m


class Bench:
    def __init__(self, args):
        self.args = args
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        self.lakeload = os.path.join(target, "release", "lakeload")
        if not os.path.exists(self.lakeload):
            sys.exit(f"{self.lakeload} is missing: run bench/run.sh, which builds it")
        self.cores = os.cpu_count() or 2
        self.work = tempfile.mkdtemp(prefix="lakeload-bench-", dir=args.work)
        self.results = {"machine": machine(), "cores": self.cores}

    def generate(self, name, files, rows, **extra):
        src = os.path.join(self.work, name)
        cmd = [self.lakeload, "generate", src, "--files", str(files), "--rows", str(rows),
               "--files-per-day", str(extra.pop("files_per_day", 2)), "--bad-ratio", "0.0005"]
        for k, v in extra.items():
            cmd += ["--" + k.replace("_", "-"), str(v)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return src

    def lakeload_run(self, src, out, mode="full", extra_env=None, expect_rc=0):
        env = {**os.environ, "LAKELOAD_SOURCE_URL": src, "LAKELOAD_TARGET_URL": out,
               **(extra_env or {})}
        m = measure([self.lakeload, "run", "--mode", mode, "--json"], env, expect_rc)
        m["summary"] = json.loads(m["out"])
        return m

    def shapes(self):
        """Each shape of input: the floor, lakeload and DuckDB at their defaults (Polars too),
        then lakeload and DuckDB at the same memory limit, small enough that both spill."""
        tiny = self.args.tiny
        rows = []
        for name, what, gen in SHAPES:
            gen = dict(gen)
            files = gen.pop("files")
            per_file = gen.pop("rows")
            if tiny:
                per_file = max(200, per_file // 2000)
            src = self.generate(f"shape-{name}", files, per_file, **gen)
            row = {"shape": what, "input_mib": input_size(src) / MIB}
            row["floor"] = decompression_floor(src, self.cores)
            out = os.path.join(self.work, f"shape-{name}-out")
            spill = os.path.join(self.work, "duckdb-spill")
            limit = "256MiB" if tiny else SHAPE_MEMORY

            def fresh(once):
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(spill, ignore_errors=True)
                return once()

            def timed(key, once):
                row[key] = best_of(1 if tiny else SHAPE_RUNS, lambda: fresh(once))

            timed("lakeload", lambda: self.lakeload_run(src, out))
            row["lines"] = row["lakeload"]["summary"]["rows_read"]
            row["budget"] = row["lakeload"]["summary"].get("memory_limit_chosen", "")
            self.results["default_budget"] = {
                "bytes": row["lakeload"]["summary"].get("memory_limit", 0),
                "chosen": row["budget"],
            }
            timed("duckdb", lambda: measure([sys.executable, "-c", DUCKDB_JOB, src, out, str(self.cores)]))
            timed("polars", lambda: measure([sys.executable, "-c", POLARS_JOB, src, out]))
            timed("lakeload_eq", lambda: self.lakeload_run(
                src, out, extra_env={"LAKELOAD_RUN_MEMORY_LIMIT": limit}))
            timed("duckdb_eq", lambda: measure(
                [sys.executable, "-c", DUCKDB_JOB, src, out, str(self.cores), limit, spill], may_fail=True))
            row["limit"] = limit
            if row["duckdb_eq"].get("failed"):
                # Equal memory where DuckDB finishes: the first larger limit it gets through,
                # and lakeload at the same limit.
                row["finish_limit"] = None
                for larger in LADDER:
                    def duckdb(larger=larger):
                        return measure([sys.executable, "-c", DUCKDB_JOB, src, out, str(self.cores),
                                        larger, spill], may_fail=True)

                    first = fresh(duckdb)
                    if first.get("failed"):
                        continue
                    # The run that found the limit counts as the first of the best-of runs.
                    runs = [first] + [fresh(duckdb) for _ in range(0 if tiny else SHAPE_RUNS - 1)]
                    row["finish_limit"] = larger
                    best = min((m for m in runs if not m.get("failed")), key=lambda m: m["s"])
                    row["duckdb_finish"] = {**best, "rss": max(m["rss"] for m in runs)}
                    timed("lakeload_finish", lambda: self.lakeload_run(
                        src, out, extra_env={"LAKELOAD_RUN_MEMORY_LIMIT": larger}))
                    break
            else:
                row["finish_limit"] = limit
                row["duckdb_finish"], row["lakeload_finish"] = row["duckdb_eq"], row["lakeload_eq"]
            for key in ("lakeload", "lakeload_eq"):
                row[key]["spilled_mib"] = row[key]["summary"].get("bytes_spilled", 0) / MIB
                del row[key]["summary"], row[key]["out"]
            row.get("lakeload_finish", {}).pop("summary", None)
            for key in ("floor", "duckdb", "polars", "duckdb_eq", "duckdb_finish", "lakeload_finish"):
                row.get(key, {}).pop("out", None)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(spill, ignore_errors=True)
            shutil.rmtree(src)
            rows.append(row)
        return rows

    def memory_bound(self):
        """lakeload at run.memory_limit = 256MiB on the shapes that strain memory: 16 readers,
        2 KB rows, an incremental run into one large date of 2 KB rows, and a wrong delimiter.
        Each run's peak RSS against the promised bound, run.memory_limit + 25 %."""
        tiny = self.args.tiny
        limit = {"LAKELOAD_RUN_MEMORY_LIMIT": f"{MEMORY_LIMIT_MIB}MiB"}
        cases = []

        def case(name, m):
            summary = m["summary"]
            cases.append({"case": name, "lines": summary["rows_read"], "s": m["s"], "rss_mib": m["rss"],
                          "exit": summary["exit_code"]})

        src = self.generate("mem-std", 20, 500 if tiny else 200_000)
        out = os.path.join(self.work, "mem-std-table")
        case("20 files, `run.threads = 16`",
             self.lakeload_run(src, out, extra_env={**limit, "LAKELOAD_RUN_THREADS": "16"}))
        shutil.rmtree(out)
        bad = self.lakeload_run(src, out, extra_env={**limit, "LAKELOAD_SOURCE_DELIMITER": ","}, expect_rc=65)
        case("the same files, `source.delimiter = ,` (stops, exit 65)", bad)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(src)

        src = self.generate("mem-wide", 8, 500 if tiny else 40_000, pad=1900)
        case("8 files of 2 KB rows", self.lakeload_run(src, out, extra_env=limit))
        shutil.rmtree(out)
        shutil.rmtree(src)

        src = self.generate("mem-one", 8, 500 if tiny else 40_000, pad=1900, days=1, customers=100_000)
        case("8 files of 2 KB rows, one date", self.lakeload_run(src, out, extra_env=limit))
        self.generate("mem-one", 1, 500 if tiny else 40_000, pad=1900, days=1, customers=100_000,
                      first_file=8, seed=9)
        case("+1 file into that date (incremental)",
             self.lakeload_run(src, out, mode="incremental", extra_env=limit))
        shutil.rmtree(out)
        shutil.rmtree(src)
        return cases

    def full_refresh(self, name, src, tools=("lakeload", "duckdb", "polars"), keep_lakeload=False,
                     runs=1):
        """Each tool on the same files (`runs` times, see `best_of`); returns {tool: measurement}.
        With `keep_lakeload`, lakeload's table stays in `<work>/<name>-lakeload` for a later
        incremental run."""
        row = {"input_mib": input_size(src) / MIB}
        for tool in tools:
            out = os.path.join(self.work, f"{name}-{tool}")

            def once():
                shutil.rmtree(out, ignore_errors=True)
                if tool == "lakeload":
                    return self.lakeload_run(src, out)
                if tool == "duckdb":
                    return measure([sys.executable, "-c", DUCKDB_JOB, src, out, str(self.cores)])
                if tool == "polars":
                    return measure([sys.executable, "-c", POLARS_JOB, src, out])
                return decompression_floor(src, self.cores)

            m = best_of(runs, once)
            if tool == "lakeload":
                counts = m["summary"]
                m["rows_out"] = counts["rows_inserted"] + counts["rows_updated"]
                row["lines"] = counts["rows_read"]
            if tool != "floor":
                m.setdefault("rows_out", count_parquet_rows(out))
                if not (keep_lakeload and tool == "lakeload"):
                    shutil.rmtree(out, ignore_errors=True)
            row[tool] = {"s": m["s"], "rss_mib": m["rss"], "rows_out": m.get("rows_out")}
        return row

    def run(self):
        a = self.args
        scale = 1 if not a.tiny else 0
        # 1. Full refresh, the reference size: 20 files, 10 M lines.
        rows = 500_000 if scale else 2_000
        src = self.generate("main", 20, rows)
        self.results["full"] = self.full_refresh("main", src, ("floor", "lakeload", "duckdb", "polars"),
                                                 runs=RUNS)
        print_full(self.results["full"])
        shutil.rmtree(src)

        # 1b. Shapes of input, at default settings and at equal memory; the disk's speed.
        self.results["disk"] = disk_speed(self.work, 16 * MIB if a.tiny else 1024 * MIB)
        self.results["shapes"] = self.shapes()
        print_shapes(self.results["shapes"], self.results["disk"])

        # 2. Scaling: 1x, 4x, 16x the rows (20 files each), then every row on one date with
        # mostly distinct keys (the worst case for memory: nothing to compact, one date).
        self.results["scaling"] = []
        for factor in (1, 4, 16):
            per_file = (50_000 if scale else 500) * factor
            src = self.generate(f"scale{factor}", 20, per_file)
            row = self.full_refresh(f"scale{factor}", src)
            row["case"] = f"{factor}x"
            self.results["scaling"].append(row)
            shutil.rmtree(src)
        per_file = 800_000 if scale else 8_000
        customers = per_file * 20 // 10
        src = self.generate("skew", 20, per_file, days=1, customers=customers)
        row = self.full_refresh("skew", src, keep_lakeload=True)
        row["case"] = "16x, one date"
        self.results["scaling"].append(row)
        # One more file into that one large date: its stored rows are read back and merged.
        self.generate("skew", 1, per_file, days=1, customers=customers, first_file=20, seed=9)
        table = os.path.join(self.work, "skew-lakeload")
        inc = self.lakeload_run(src, table, mode="incremental")
        self.results["large_date_incremental"] = {
            "s": inc["s"], "rss_mib": inc["rss"], "stored_rows": row["lakeload"]["rows_out"],
            "new_lines": inc["summary"]["rows_read"],
        }
        shutil.rmtree(src)
        shutil.rmtree(table)
        print_scaling(self.results["scaling"])
        print_large_date(self.results["large_date_incremental"])

        # 3. Incremental: 1 file (landing on the third day: it touches 3 dates) into tables
        # built from 25 and from 100 files.
        self.results["incremental"] = []
        per_file = 100_000 if scale else 1_000
        for files in (25, 100):
            src = self.generate(f"inc{files}", files, per_file)
            out = os.path.join(self.work, f"inc{files}-table")
            built = out + "-built"

            def full_once():
                shutil.rmtree(out, ignore_errors=True)
                return self.lakeload_run(src, out)

            full = best_of(RUNS, full_once)
            shutil.copytree(out, built)
            # With --days 3 (and 2 files a day) file n lands on day (n // 2) % 3; day 2 gives
            # late rows for days 0 and 1 as well.
            first = next(n for n in range(files, files + 6) if (n // 2) % 3 == 2)
            self.generate(f"inc{files}", 1, per_file, first_file=first, days=3, seed=9)

            def inc_once():
                shutil.rmtree(out)
                shutil.copytree(built, out)
                return self.lakeload_run(src, out, mode="incremental")

            inc = best_of(RUNS, inc_once)
            self.results["incremental"].append({
                "table_files": files, "full_s": full["s"], "inc_s": inc["s"],
                "inc_rss_mib": inc["rss"], "dates": len(inc["summary"]["dates_written"]),
            })
            shutil.rmtree(src)
            shutil.rmtree(out)
            shutil.rmtree(built)
        print_incremental(self.results["incremental"])

        # 4. Memory: the bound held where memory is tight.
        self.results["memory"] = self.memory_bound()
        print_memory(self.results["memory"])

        # 5. S3: the full refresh through moto on 127.0.0.1, and moto's own ceiling (every
        # source object read with as many parallel GETs as lakeload uses).
        if not a.skip_s3:
            rows = 250_000 if scale else 1_000
            src = self.generate("s3", 20, rows)
            self.results["s3"] = s3_run(self, src)
            print_s3(self.results["s3"])
            shutil.rmtree(src)

        with open(os.path.join(self.work, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1)
        if a.update_readme:
            update_readme(self.results)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(self.results, f, indent=1)
        shutil.rmtree(self.work, ignore_errors=True)


# The shapes: (name, what, `lakeload generate` options). Sizes as the issue that asked for them
# measured them; `--tiny` divides the rows per file by 2,000.
SHAPES = [
    ("reference", "reference: 2 files a day, keys that compact well",
     dict(files=20, rows=500_000)),
    ("late", "late data: every file spans all 30 days, 50 k customers",
     dict(files=20, rows=500_000, span=30, customers=50_000)),
    ("distinct", "mostly distinct keys: 32 files spanning 60 days, 2 M customers",
     dict(files=32, rows=500_000, span=60, customers=2_000_000)),
    ("one-date", "one date, mostly distinct keys",
     dict(files=20, rows=800_000, days=1, customers=1_600_000)),
    ("wide", "2 KB rows (`--pad 1900`)",
     dict(files=8, rows=100_000, pad=1900)),
]
# The memory both lakeload and DuckDB get in the equal-memory runs: every shape spills there.
SHAPE_MEMORY = "512MiB"
SHAPE_RUNS = 2
# Where DuckDB runs out of memory at SHAPE_MEMORY, the limits tried next, smallest first: the
# first it finishes at is the equal-memory comparison (one run each until then).
LADDER = ["1GiB", "2GiB", "3GiB", "4GiB", "6GiB", "8GiB"]


def disk_speed(work, size, tries=3):
    """Sequential write (1 MiB writes, then fdatasync) and read of `size` bytes in the bench's
    folder, the file evicted from the page cache between the two: the disk's own speed. The
    best of `tries` for each, since a shared (virtual) disk only ever runs slower than it can,
    and the spill target (see `spill_target`) should be the strictest one."""
    path = os.path.join(work, "disk-speed.bin")
    chunk = os.urandom(MIB)
    best = {"write_mib_s": 0.0, "read_mib_s": 0.0}
    for _ in range(tries):
        t = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(size // MIB):
                f.write(chunk)
            f.flush()
            os.fdatasync(f.fileno())
        write_s = time.perf_counter() - t
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        t = time.perf_counter()
        while os.read(fd, 4 * MIB):
            pass
        read_s = time.perf_counter() - t
        os.close(fd)
        os.remove(path)
        best["write_mib_s"] = max(best["write_mib_s"], size / MIB / write_s)
        best["read_mib_s"] = max(best["read_mib_s"], size / MIB / read_s)
    return best


def spill_target(shape, disk):
    """What a run that spills may cost (issue 19): the in-memory run's time plus writing and
    reading what it spilled at the disk's measured speeds."""
    spilled = shape["lakeload_eq"]["spilled_mib"]
    return shape["lakeload"]["s"] + spilled / disk["write_mib_s"] + spilled / disk["read_mib_s"]


def shapes_table(shapes, disk):
    rows = [f"| shape | lines | input MiB | floor s | lakeload s (budget) | peak MiB | DuckDB s | peak MiB "
            f"| Polars s | ÷ DuckDB | lakeload s at {shapes[0]['limit']} | peak MiB | spilled MiB | "
            f"spill target s | ÷ target | DuckDB s at {shapes[0]['limit']} | peak MiB | ÷ DuckDB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in shapes:
        ld, dd, le, de = r["lakeload"], r["duckdb"], r["lakeload_eq"], r["duckdb_eq"]
        rows.append(
            f"| {r['shape']} | {r['lines']:,} | {r['input_mib']:.0f} | {r['floor']['s']:.2f} | "
            f"{ld['s']:.2f} | {ld['rss']:.0f} | {dd['s']:.2f} | {dd['rss']:.0f} | {r['polars']['s']:.2f} | "
            f"{ld['s'] / dd['s']:.2f}x | {le['s']:.2f} | {le['rss']:.0f} | {le['spilled_mib']:.0f} | "
            f"{spill_target(r, disk):.2f} | {le['s'] / spill_target(r, disk):.2f}x | " +
            (f"failed after {de['s']:.1f} s ({de['failed']}) | {de['rss']:.0f} | |" if de.get("failed") else
             f"{de['s']:.2f} | {de['rss']:.0f} | {le['s'] / de['s']:.2f}x |"))
    rows.append("")
    rows.append(f"lakeload's default budget here: {shapes[0]['budget'] or '?'}. The disk: "
                f"{disk['write_mib_s']:.0f} MiB/s sequential write (with fdatasync), "
                f"{disk['read_mib_s']:.0f} MiB/s read (not cached), each the best of 3. The spill target is "
                f"the time at defaults (nothing spilled) plus writing and reading what the run at "
                f"{shapes[0]['limit']} spilled at those speeds.")
    return "\n".join(rows)


def finish_table(shapes):
    """Equal memory where DuckDB finishes: the smallest limit of the ladder it gets through,
    lakeload given the same."""
    rows = ["| shape | memory limit (both) | lakeload s | peak MiB | DuckDB s | peak MiB | ÷ DuckDB |",
            "|---|---|---|---|---|---|---|"]
    for r in shapes:
        if r["finish_limit"] is None:
            rows.append(f"| {r['shape']} | DuckDB ran out of memory up to {LADDER[-1]} | | | | | |")
            continue
        le, de = r["lakeload_finish"], r["duckdb_finish"]
        rows.append(f"| {r['shape']} | {r['finish_limit']} | {le['s']:.2f} | {le['rss']:.0f} | "
                    f"{de['s']:.2f} | {de['rss']:.0f} | {le['s'] / de['s']:.2f}x |")
    return "\n".join(rows)


def print_shapes(shapes, disk):
    print("\nShapes\n" + shapes_table(shapes, disk))
    print("\nEqual memory where DuckDB finishes\n" + finish_table(shapes))


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB"


def input_size(src):
    return sum(os.path.getsize(f) for f in gz_files(src))


def gz_files(src):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(".gz"))


def decompression_floor(src, cores):
    """Every .gz inflated to /dev/null, `cores` at a time: the least any tool can take."""
    listing = os.path.join(os.path.dirname(src), "files.txt")
    with open(listing, "w") as f:
        f.write("\n".join(gz_files(src)) + "\n")
    return measure(["xargs", "-a", listing, "-P", str(cores), "-n", "1", "sh", "-c",
                    'gzip -dc "$0" >/dev/null'])


def count_parquet_rows(out):
    import duckdb
    if not os.path.isdir(out):
        return None
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/**/*.parquet')").fetchone()[0]


def fmt_row(tool, m, lines, input_mib, refs):
    s = m["s"]
    ratios = []
    for ref in ("duckdb", "polars", "floor"):
        r = refs.get(ref)
        ratios.append(f"{s / r['s']:.2f}x" if r and tool != ref else "")
    return (f"| {tool} | {lines:,} | {input_mib:.0f} | {s:.2f} | {input_mib / s:.0f} | "
            f"{m['rss_mib']:.0f} | " + " | ".join(ratios) + " |")


FULL_HEADER = ("| tool | lines | input MiB (gzip) | wall s | MiB/s | peak RSS MiB | ÷ DuckDB | ÷ Polars "
               "| ÷ floor |\n|---|---|---|---|---|---|---|---|---|")


def full_table(full):
    rows = [FULL_HEADER]
    for tool in ("lakeload", "duckdb", "polars", "floor"):
        if tool in full:
            name = {"floor": "decompression floor (gzip -dc, all cores)"}.get(tool, tool)
            rows.append(fmt_row(name, full[tool], full["lines"], full["input_mib"], full))
    return "\n".join(rows)


def print_full(full):
    print("\nFull refresh\n" + full_table(full))
    print("rows written: " + ", ".join(f"{t} {full[t]['rows_out']:,}" for t in ("lakeload", "duckdb", "polars")
                                       if full.get(t, {}).get("rows_out") is not None))


def scaling_table(scaling):
    rows = ["| case | lines | input MiB | lakeload s | lakeload peak MiB | DuckDB s | DuckDB peak MiB | "
            "Polars s | Polars peak MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in scaling:
        rows.append(f"| {r['case']} | {r['lines']:,} | {r['input_mib']:.0f} | "
                    f"{r['lakeload']['s']:.2f} | {r['lakeload']['rss_mib']:.0f} | "
                    f"{r['duckdb']['s']:.2f} | {r['duckdb']['rss_mib']:.0f} | "
                    f"{r['polars']['s']:.2f} | {r['polars']['rss_mib']:.0f} |")
    return "\n".join(rows)


def print_scaling(scaling):
    print("\nScaling\n" + scaling_table(scaling))


def large_date_line(r):
    return (f"Incremental into that one date ({r['stored_rows']:,} stored rows, "
            f"{r['new_lines']:,} new lines): {r['s']:.2f} s, peak {r['rss_mib']:.0f} MiB.")


def print_large_date(r):
    print(large_date_line(r))


def incremental_table(inc):
    rows = ["| table built from | full refresh s | +1 file (incremental) s | share | dates rewritten | "
            "peak MiB |", "|---|---|---|---|---|---|"]
    for r in inc:
        rows.append(f"| {r['table_files']} files | {r['full_s']:.2f} | {r['inc_s']:.2f} | "
                    f"{100 * r['inc_s'] / r['full_s']:.1f} % | {r['dates']} | {r['inc_rss_mib']:.0f} |")
    return "\n".join(rows)


def print_incremental(inc):
    print("\nIncremental\n" + incremental_table(inc))


MEMORY_LIMIT_MIB = 256


def memory_table(cases):
    bound = MEMORY_LIMIT_MIB * 1.25
    rows = [f"| case (`run.memory_limit = {MEMORY_LIMIT_MIB}MiB`) | lines read | wall s | peak RSS MiB | "
            f"bound MiB | within |", "|---|---|---|---|---|---|"]
    for c in cases:
        rows.append(f"| {c['case']} | {c['lines']:,} | {c['s']:.2f} | {c['rss_mib']:.0f} | {bound:.0f} | "
                    f"{'yes' if c['rss_mib'] <= bound else '**no**'} |")
    return "\n".join(rows)


def print_memory(cases):
    print("\nMemory bound\n" + memory_table(cases))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_run(bench, src):
    import boto3
    port = free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    server = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        s3.create_bucket(Bucket="src")
        s3.create_bucket(Bucket="lake")
        for f in gz_files(src):
            s3.upload_file(f, "src", os.path.relpath(f, src))
        size = input_size(src)
        env = {**creds, "LAKELOAD_AWS_ENDPOINT_URL": endpoint, "LAKELOAD_AWS_FORCE_PATH_STYLE": "true"}
        s3m = bench.lakeload_run("s3://src", "s3://lake/table", extra_env=env)
        local = bench.lakeload_run(src, os.path.join(bench.work, "s3-local"))
        # The server's ceiling: GET every object, as many at a time as lakeload reads.
        ceiling = measure([sys.executable, "-c", S3_CEILING, endpoint, str(bench.cores)])
        return {"input_mib": size / MIB, "s3_s": s3m["s"], "local_s": local["s"],
                "ceiling_s": ceiling["s"], "s3_rss_mib": s3m["rss"]}
    finally:
        server.terminate()
        server.wait()


S3_CEILING = r"""
import sys, concurrent.futures, boto3
endpoint, threads = sys.argv[1], int(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="bench", aws_secret_access_key="bench")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="src")["Contents"]]
def get(k):
    body = s3.get_object(Bucket="src", Key=k)["Body"]
    while body.read(1 << 20):
        pass
with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    list(pool.map(get, keys))
"""


def s3_table(r):
    return ("| path | wall s | ÷ local |\n|---|---|---|\n"
            f"| local folder → local folder | {r['local_s']:.2f} | 1.00x |\n"
            f"| S3 (moto on 127.0.0.1) → S3 | {r['s3_s']:.2f} | {r['s3_s'] / r['local_s']:.2f}x |\n"
            f"| moto's ceiling: GET every source object, no processing | {r['ceiling_s']:.2f} | "
            f"{r['ceiling_s'] / r['local_s']:.2f}x |")


def print_s3(r):
    print(f"\nS3 path ({r['input_mib']:.0f} MiB gzip)\n" + s3_table(r))


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = [r for r in results["scaling"] if "one date" not in r["case"]]
    skew = next((r for r in results["scaling"] if "one date" in r["case"]), None)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for tool, style in (("lakeload", "o-"), ("duckdb", "s--"), ("polars", "^:")):
        x = [r["lines"] / 1e6 for r in cases]
        left.plot(x, [r["lines"] / r[tool]["s"] / 1e6 for r in cases], style, label=tool)
        right.plot(x, [r[tool]["rss_mib"] for r in cases], style, label=tool)
        if skew:
            right.plot([skew["lines"] / 1e6], [skew[tool]["rss_mib"]], style[0], mfc="none", ms=10,
                       color=right.lines[-1].get_color())
    budget = results.get("default_budget")
    if budget:
        right.axhline(budget["bytes"] / MIB * 1.25, color="grey", lw=0.8, ls="-.",
                      label="lakeload default budget + 25 %")
    left.set(xscale="log", xlabel="input lines (millions)", ylabel="million lines / s", title="Throughput")
    right.set(xscale="log", yscale="log", xlabel="input lines (millions)", ylabel="peak RSS (MiB, log scale)",
              title="Peak memory (hollow: all rows on one date)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Full refresh, {results['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def update_readme(results):
    png = os.path.join(ROOT, "bench", "performance.png")
    plot(results, png)
    parts = [
        f"Measured by `bench/run.sh --update-readme` on {results['machine']}.",
        "",
        f"Times in the full-refresh and incremental tables are the best of {RUNS} runs of each tool "
        f"(peak memory: the highest of the {RUNS}).",
        "",
        "**Full refresh** (20 files of `lakeload generate`, 2 files a day):",
        "",
        full_table(results["full"]),
        "",
        "**Shapes of input** (each tool at its defaults, then lakeload and DuckDB given the same "
        "memory, small enough that both spill; the floor inflates every file on all cores):",
        "",
        shapes_table(results["shapes"], results["disk"]),
        "",
        f"**Equal memory where DuckDB finishes** (where DuckDB runs out of memory at "
        f"{results['shapes'][0]['limit']}, the next limit of {', '.join(LADDER)} it finishes at; "
        f"lakeload given the same; best of {SHAPE_RUNS}):",
        "",
        finish_table(results["shapes"]),
        "",
        "**Scaling** (20 files each; the last case puts every row on one date, with mostly distinct keys):",
        "",
        scaling_table(results["scaling"]),
        "",
        large_date_line(results["large_date_incremental"]),
        "",
        "**Incremental** (1 file landing on the third day, so it touches 3 dates):",
        "",
        incremental_table(results["incremental"]),
        "",
        f"**Memory bound** (peak RSS against `run.memory_limit` + 25 %, on 2 cores; 2 KB rows come "
        f"from `lakeload generate --pad 1900`):",
        "",
        memory_table(results["memory"]),
    ]
    if "s3" in results:
        parts += ["", f"**S3 path** ({results['s3']['input_mib']:.0f} MiB gzip):", "", s3_table(results["s3"])]
    parts += ["", "![throughput and peak memory against input size](bench/performance.png)"]
    readme = os.path.join(ROOT, "README.md")
    text = open(readme).read()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        sys.exit(f"README.md has no {start} … {end} section to update")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(readme, "w") as f:
        f.write(head + start + "\n" + "\n".join(parts) + "\n" + end + tail)
    print(f"\nupdated README.md and {png}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy sizes: checks the benchmarks still work")
    ap.add_argument("--update-readme", action="store_true", help="rewrite the README's Performance section")
    ap.add_argument("--skip-s3", action="store_true", help="leave out the S3 run")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--work", help="folder for the generated data (default: the system's temp folder)")
    args = ap.parse_args()
    Bench(args).run()


if __name__ == "__main__":
    main()
