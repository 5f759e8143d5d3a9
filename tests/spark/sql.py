"""Runs Spark SQL statements with Delta Lake, as another engine maintaining a lakeload table
would (DELETE, OPTIMIZE, INSERT, ALTER TABLE ...).

    sql.py STATEMENT [STATEMENT ...]

Tables are named by path: delta.`/path/to/table`. Statements run in order in one Spark
session; a failing statement fails the script (exit 1, the error on stderr). Prints one JSON
line per statement: {"statement": ..., "rows": [...]} (the rows a query returns, as JSON).

Run by tests/spark/run.sh --sql, which passes the Delta jars in LAKELOAD_SPARK_JARS.
"""

import json
import os
import sys


def main():
    statements = sys.argv[1:]
    if not statements:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    from session import delta_session

    spark = delta_session("lakeload-delta-sql")
    for statement in statements:
        try:
            rows = [r.asDict(recursive=True) for r in spark.sql(statement).collect()]
        except Exception as e:  # noqa: BLE001 - the message is the test's evidence
            print(f"FAILED: {statement}: {e}", file=sys.stderr)
            sys.exit(1)
        print(json.dumps({"statement": statement, "rows": rows}, default=str), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
