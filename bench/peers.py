"""Runs one of bench/queries/*.sql with DuckDB, Polars or DataFusion over the Parquet files of
the lake's Delta tables, writes the answer as CSV for bench/run to compare with lake's, and the
seconds from connecting to the last row fetched (the interpreter's start and imports left out).

    python peers.py duckdb|polars|datafusion QUERY.sql LAKE_ROOT OUT.csv SECONDS_FILE

All read the files the table's Delta log holds now (its add actions less its removes).
Polars runs the same SQL through its SQL context, with `raw.<table>` written `raw_<table>`.
DataFusion (its Python bindings, the same major version as lake's) is timed as a warm session:
the tables are registered (a folder of links to the live files) before the clock starts, so
its figure is DataFusion's own work on the files, which lake's cold process is held against.
"""
import csv
import json
import sys
import time
from pathlib import Path

engine, query_file, root, out, secs_file = sys.argv[1:6]
sql = open(query_file).read()
tables = ["spotify_streams", "spotify_tracks"]


def files(table):
    """The table's current data files, from its Delta log."""
    live = {}
    for commit in sorted(Path(root, "raw", table, "_delta_log").glob("*.json")):
        for line in open(commit):
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = True
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return [str(Path(root, "raw", table, p)) for p in live]


paths = {t: files(t) for t in tables}
if engine == "duckdb":
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA raw")
    for t in tables:
        con.execute(f"CREATE VIEW raw.{t} AS SELECT * FROM read_parquet({paths[t]!r})")
    rel = con.sql(sql)
    columns, rows = rel.columns, rel.fetchall()
elif engine == "polars":
    import polars as pl

    started = time.perf_counter()
    ctx = pl.SQLContext()
    for t in tables:
        ctx.register(f"raw_{t}", pl.scan_parquet(paths[t]))
    df = ctx.execute(sql.replace("raw.", "raw_"), eager=True)
    columns, rows = df.columns, df.rows()
elif engine == "datafusion":
    import os
    import tempfile

    import datafusion

    ctx = datafusion.SessionContext()
    ctx.sql("CREATE SCHEMA raw").collect()
    links = Path(tempfile.mkdtemp(prefix="df-links."))
    for t in tables:
        d = links / t
        d.mkdir()
        for i, p in enumerate(paths[t]):
            os.symlink(os.path.abspath(p), d / f"{i:05}.parquet")
        ctx.sql(f"CREATE EXTERNAL TABLE raw.{t} STORED AS PARQUET LOCATION '{d}/'").collect()
    started = time.perf_counter()
    batches = ctx.sql(sql).collect()
    columns = [f.name for f in ctx.sql(sql).schema()] if not batches else batches[0].schema.names
    rows = [tuple(r.values()) for b in batches for r in b.to_pylist()]
else:
    sys.exit(f"unknown engine {engine}")
Path(secs_file).write_text(f"{time.perf_counter() - started:.6f}")
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(columns)
    w.writerows(rows)
