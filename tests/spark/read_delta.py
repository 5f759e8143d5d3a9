"""Reads a Delta table with Apache Spark + Delta Lake and checks each given version.

    read_delta.py TABLE VERSION=ROWS [VERSION=ROWS ...] [--date-columns c6,c7]
                  [--timestamp-columns _source_modified]

For each VERSION, `spark.read.format("delta").option("versionAsOf", VERSION)` must give ROWS
rows and a schema that matches the table's own (the last `metaData` of the Delta log at that
version): every column of the log's schema with the Spark type its Delta type names, the
partition columns included; the `--date-columns` must be DateType and the
`--timestamp-columns` TimestampType, and no row may have a NULL partition value. Prints one
JSON line per version, then one for the latest version, and exits 1 on any mismatch (with a
line `MISMATCH ...` on stderr for each).

Run by tests/spark/run.sh, which passes the Delta jars in LAKELOAD_SPARK_JARS.
"""

import argparse
import glob
import json
import os
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("table")
    p.add_argument("expected", nargs="+", metavar="VERSION=ROWS")
    p.add_argument("--date-columns", default="c6,c7")
    p.add_argument("--timestamp-columns", default="_source_modified")
    a = p.parse_args()
    expected = []
    for e in a.expected:
        v, sep, n = e.partition("=")
        if not sep or not v.isdigit() or not n.isdigit():
            p.error(f"expected VERSION=ROWS, got {e!r}")
        expected.append((int(v), int(n)))
    a.expected = expected
    a.date_columns = [c for c in a.date_columns.split(",") if c]
    a.timestamp_columns = [c for c in a.timestamp_columns.split(",") if c]
    return a


def log_metadata(spark, table, version):
    """The table's schema (name -> Delta type) and partition columns at `version`, from the
    last metaData action of the commits up to it (or of the checkpoint before them)."""
    log = os.path.join(table, "_delta_log")
    commits = sorted(
        int(os.path.basename(f)[:20]) for f in glob.glob(os.path.join(log, "[0-9]" * 20 + ".json"))
    )
    meta = None
    for v in reversed([c for c in commits if c <= version]):
        with open(os.path.join(log, f"{v:020d}.json")) as f:
            for line in f:
                line = line.strip()
                if line:
                    action = json.loads(line)
                    if "metaData" in action:
                        meta = action["metaData"]
        if meta is not None:
            break
    if meta is None:
        checkpoints = sorted(
            f
            for f in glob.glob(os.path.join(log, "[0-9]" * 20 + ".checkpoint*.parquet"))
            if int(os.path.basename(f)[:20]) <= version
        )
        if checkpoints:
            last = int(os.path.basename(checkpoints[-1])[:20])
            files = [f for f in checkpoints if int(os.path.basename(f)[:20]) == last]
            row = (
                spark.read.parquet(*files)
                .where("metaData IS NOT NULL")
                .select("metaData.schemaString", "metaData.partitionColumns")
                .first()
            )
            meta = {"schemaString": row[0], "partitionColumns": list(row[1])}
    if meta is None:
        raise SystemExit(f"no metaData in {log} up to version {version}")
    schema = json.loads(meta["schemaString"])
    return {f["name"]: f["type"] for f in schema["fields"]}, list(meta["partitionColumns"])


# Delta primitive type name -> Spark's DataType.typeName()
SPARK_TYPE = {
    "string": "string",
    "long": "long",
    "integer": "integer",
    "short": "short",
    "byte": "byte",
    "float": "float",
    "double": "double",
    "boolean": "boolean",
    "binary": "binary",
    "date": "date",
    "timestamp": "timestamp",
    "timestamp_ntz": "timestamp_ntz",
}


def check(spark, F, args, table, version, rows):
    """Reads one version (the latest if `version` is None); returns its JSON line and problems."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    df = reader.load(table)
    schema = {f.name: f.dataType.typeName() for f in df.schema.fields}
    if version is None:
        version = spark.sql(f"DESCRIBE HISTORY delta.`{table}` LIMIT 1").first()["version"]
    log_schema, partition_columns = log_metadata(spark, table, version)
    what = f"version {version}"
    problems = []

    # The counts, and what the partition column(s) hold.
    agg = [F.count(F.lit(1)).alias("rows")]
    for c in partition_columns:
        if c in schema:
            agg += [
                F.sum(F.col(c).isNull().cast("long")).alias(f"null_{c}"),
                F.countDistinct(c).alias(f"distinct_{c}"),
                F.min(c).cast("string").alias(f"min_{c}"),
                F.max(c).cast("string").alias(f"max_{c}"),
            ]
    for c in args.timestamp_columns:
        if c in schema:
            agg += [F.min(c).cast("string").alias(f"min_{c}"), F.max(c).cast("string").alias(f"max_{c}")]
    # Filters Spark may answer by skipping files on their stats (min/max per column), and the
    # same predicates counted over every row: skipping must lose no row.
    filters = [(c, p) for c, p in (("c1", F.col("c1") >= "C015000"), ("_source_line", F.col("_source_line") < 200)) if c in schema]
    for c, predicate in filters:
        agg.append(F.sum(predicate.cast("long")).alias(f"every_row_{c}"))
    stats = df.agg(*agg).first().asDict()
    for c, predicate in filters:
        skipped = df.where(predicate).count()
        stats[f"filtered_{c}"] = skipped
        if skipped != (stats[f"every_row_{c}"] or 0):
            problems.append(f"{what}: a filter on {c} gives {skipped} rows, {stats[f'every_row_{c}']} rows match it")
    if rows is not None and stats["rows"] != rows:
        problems.append(f"{what}: Spark counts {stats['rows']} rows, expected {rows}")
    for c in partition_columns:
        if stats.get(f"null_{c}"):
            problems.append(f"{what}: {stats[f'null_{c}']} rows have a NULL partition value in {c}")

    # The types: the log's schema, column for column, and the ones named.
    for name, dtype in log_schema.items():
        want = SPARK_TYPE.get(dtype) if isinstance(dtype, str) else None
        if name not in schema:
            problems.append(f"{what}: column {name} ({dtype} in the Delta log) is missing in Spark's schema")
        elif want is not None and schema[name] != want:
            problems.append(f"{what}: column {name} is {schema[name]} in Spark, {dtype} in the Delta log")
    for name in schema:
        if name not in log_schema:
            problems.append(f"{what}: Spark has column {name}, which the Delta log's schema lacks")
    for c in partition_columns:
        if c not in schema:
            problems.append(f"{what}: partition column {c} is missing in Spark's schema")
    for cols, want in ((args.date_columns, "date"), (args.timestamp_columns, "timestamp")):
        for c in cols:
            if schema.get(c) != want:
                problems.append(f"{what}: column {c} is {schema.get(c)} in Spark, expected {want}")

    line = {
        "version": version,
        "latest": rows is None,
        "rows": stats["rows"],
        "expected_rows": rows,
        "ok": not problems,
        "partition_columns": partition_columns,
        "schema": schema,
        "stats": {k: v for k, v in stats.items() if k != "rows"},
    }
    return line, problems


def main():
    args = parse_args()
    if not os.path.isdir(os.path.join(args.table, "_delta_log")):
        print(f"{args.table} is not a Delta table: it has no _delta_log folder", file=sys.stderr)
        sys.exit(1)
    from pyspark.sql import functions as F

    from session import delta_session

    t0 = time.monotonic()
    spark = delta_session("lakeload-delta-read")
    startup = time.monotonic() - t0

    mismatches = []
    table = os.path.abspath(args.table)
    # The newest version is read last, without versionAsOf.
    reads = [(v, n) for v, n in args.expected] + [(None, None)]
    for version, rows in reads:
        t = time.monotonic()
        try:
            line, problems = check(spark, F, args, table, version, rows)
        except Exception as e:  # e.g. a version the table does not have, an unreadable file
            java = getattr(e, "java_exception", None)  # a Py4JJavaError: say the Java exception
            text = str(java.toString()) if java is not None else str(e).strip()
            msg = text.splitlines()[0] if text else type(e).__name__
            line = {"version": version, "latest": rows is None, "ok": False, "error": msg[:2000]}
            problems = [f"version {version if version is not None else 'latest'}: Spark failed: {msg[:2000]}"]
        line["seconds"] = round(time.monotonic() - t, 2)
        print(json.dumps(line), flush=True)
        mismatches += problems

    print(
        json.dumps(
            {
                "spark": spark.version,
                "startup_seconds": round(startup, 2),
                "total_seconds": round(time.monotonic() - t0, 2),
                "ok": not mismatches,
            }
        ),
        flush=True,
    )
    for m in mismatches:
        print(f"MISMATCH {m}", file=sys.stderr, flush=True)
    spark.stop()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
