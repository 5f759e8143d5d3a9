"""Years of Delta history: the memory lakeload's commands take on a table with many versions.

Builds a synthetic lakeload Delta table as years of daily full runs leave it: VERSIONS commits,
each replacing DATES files (one per date) and naming, by its digest, the list of FILES source
files its run processed (written beside the log as lakeload writes it; one list shared by all
versions, which changes nothing in memory: a command reads at most the lists from the last
full run on), and a checkpoint every 100 versions' latest (written by delta-rs), so up to 99
commits follow it as on a table lakeload's runs keep. Then runs, each in a
fresh child with `run.memory_limit = LIMIT`, and prints its wall time and peak RSS:

- `history --json` (every version, newest first),
- `vacuum --dry-run --json` (the first vacuum: every commit is read for expired tombstones),
- `plan --mode incremental` and `run --mode incremental` with the state lost (the state is
  rebuilt from the log: every commit read for what it records of its run),
- `rollback --to-version VERSIONS-2` (every commit up to it read).

    bench/run.sh --history [--tiny] [--versions N] [--files N] [--dates N] [--memory-limit 256MiB]
"""

import argparse
import datetime
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from bench import MEASURE, ROOT

SCHEMA = {
    "type": "struct",
    "fields": [{"name": f"c{i}", "type": "date" if i in (6, 7) else "string", "nullable": True, "metadata": {}}
               for i in range(1, 9)]
    + [{"name": "_source_file", "type": "string", "nullable": True, "metadata": {}},
       {"name": "_source_line", "type": "long", "nullable": True, "metadata": {}},
       {"name": "_source_modified", "type": "timestamp", "nullable": True, "metadata": {}}],
}
TABLE_ID = "0b7e5d8a-1c2f-4e3d-9a6b-5c4d3e2f1a0b"


def write_list(table, files):
    """The run's file list as lakeload writes it; its digest."""
    records = [{"key": f"2026/01/01/events-{i:06}.gz", "size": 1_000_000, "etag": f"\"{i:032x}\"",
                "last_modified": "2026-01-01T00:00:00Z", "rows": 1000, "rows_rejected": 0,
                "dates": ["2026-01-01"], "run_id": "bench"} for i in range(files)]
    body = json.dumps(records).encode()
    sha = hashlib.sha256(body).hexdigest()
    path = f"_lakeload/files/{sha}.json.gz"
    os.makedirs(os.path.join(table, "_lakeload", "files"), exist_ok=True)
    with open(os.path.join(table, path), "wb") as f:
        f.write(gzip.compress(body, 1))
    return {"count": files, "rows": 1000 * files, "sha256": sha, "path": path}


def build(table, versions, files, dates):
    os.makedirs(os.path.join(table, "_delta_log"))
    digest = write_list(table, files)
    start = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc) - datetime.timedelta(days=versions)
    days = [(datetime.date(2024, 1, 1) + datetime.timedelta(days=d)).isoformat() for d in range(dates)]
    settings = {"columns": [f"c{i}" for i in range(1, 9)], "date_columns": ["c6", "c7"],
                "key": ["c1", "c7", "c8"], "partition_column": "c7", "timestamp_format": None,
                "order": "arrival", "layout": "ymd", "format": "delta"}

    def path(v, day):
        return f"c7={day}/run-{v:05}.0000abcd.snappy.parquet"

    for v in range(versions):
        ms = int((start + datetime.timedelta(days=v)).timestamp() * 1000)
        actions = []
        if v == 0:
            actions.append({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
            actions.append({"metaData": {"id": TABLE_ID, "format": {"provider": "parquet", "options": {}},
                                         "schemaString": json.dumps(SCHEMA), "partitionColumns": ["c7"],
                                         "configuration": {}, "createdTime": ms}})
        else:
            for day in days:
                actions.append({"remove": {"path": path(v - 1, day), "deletionTimestamp": ms, "dataChange": True,
                                           "extendedFileMetadata": True, "partitionValues": {"c7": day},
                                           "size": 40_000}})
        for day in days:
            actions.append({"add": {"path": path(v, day), "partitionValues": {"c7": day}, "size": 40_000,
                                    "modificationTime": ms, "dataChange": True,
                                    "stats": json.dumps({"numRecords": 1000})}})
        actions.append({"txn": {"appId": f"lakeload-{TABLE_ID}", "version": v, "lastUpdated": ms}})
        actions.append({"commitInfo": {"timestamp": ms, "operation": "WRITE", "engineInfo": "lakeload/bench",
                                       "lakeload": {"runId": f"run-{v:05}", "mode": "full", "files": digest,
                                                    "settings": settings}}})
        with open(os.path.join(table, "_delta_log", f"{v:020}.json"), "w") as f:
            f.write("\n".join(json.dumps(a) for a in actions) + "\n")
    # The files of the version a rollback restores must exist.
    for day in days:
        name = os.path.join(table, path(versions - 2, day))
        os.makedirs(os.path.dirname(name), exist_ok=True)
        open(name, "wb").close()
    venv_python = os.path.join(os.environ.get("LAKELOAD_BENCH_VENV", ""), "bin", "python")
    # The latest checkpoint where lakeload's runs would have written it (every 100 versions),
    # so commands replay up to 99 commits after it, as on a real table.
    subprocess.run([venv_python if os.path.exists(venv_python) else sys.executable, "-c",
                    "import sys\nfrom deltalake import DeltaTable\n"
                    "DeltaTable(sys.argv[1], version=int(sys.argv[2])).create_checkpoint()",
                    table, str(checkpoint_version(versions))], check=True)


def checkpoint_version(versions):
    return (versions - 1) // 100 * 100


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="toy sizes: checks the bench still works")
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--dates", type=int, default=365)
    ap.add_argument("--memory-limit", default="256MiB")
    ap.add_argument("--work", help="folder for the table (default: the system's temp folder)")
    args = ap.parse_args()
    if args.tiny:
        args.versions, args.files, args.dates = 12, 300, 20
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    lakeload = os.path.join(target, "release", "lakeload")
    work = tempfile.mkdtemp(prefix="lakeload-history-", dir=args.work)
    try:
        table, source = os.path.join(work, "table"), os.path.join(work, "src")
        os.makedirs(source)
        build(table, args.versions, args.files, args.dates)
        log_bytes = sum(os.path.getsize(os.path.join(table, "_delta_log", f))
                        for f in os.listdir(os.path.join(table, "_delta_log")))
        env = {**os.environ, "LAKELOAD_SOURCE_URL": source, "LAKELOAD_TARGET_URL": table,
               "LAKELOAD_TARGET_FORMAT": "delta", "LAKELOAD_RUN_MEMORY_LIMIT": args.memory_limit}
        print(f"table: {args.versions} versions x {args.dates} dates, file lists of {args.files:,} source "
              f"files, log {log_bytes / 2**20:.0f} MiB, checkpoint at version {checkpoint_version(args.versions)}; "
              f"run.memory_limit = {args.memory_limit}\n")
        print("| command | seconds | peak RSS (MiB) |\n|---|---|---|")
        commands = [
            ("history --json", ["history", "--json"], 0),
            ("vacuum --dry-run (first vacuum)", ["vacuum", "--dry-run", "--json"], 0),
            ("plan --mode incremental (state lost)", ["plan", "--mode", "incremental", "--json"], 0),
            ("run --mode incremental (state lost)", ["run", "--mode", "incremental", "--json"], 0),
            (f"rollback --to-version {args.versions - 2}", ["rollback", "--to-version", str(args.versions - 2),
                                                            "--allow-missing", "--json"], 0),
        ]
        failed = False
        for name, cmd, rc in commands:
            proc = subprocess.run([sys.executable, "-c", MEASURE, lakeload] + cmd, env=env,
                                  capture_output=True, text=True, check=True)
            m = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| `{name}` | {m['s']:.2f} | {m['rss']:.0f} |", flush=True)
            if m["rc"] != rc:
                print(f"  failed ({m['rc']}): {m['err'].strip()[-600:]}", file=sys.stderr)
                failed = True
        sys.exit(1 if failed else 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
