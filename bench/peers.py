"""Runs one of bench/queries/*.sql with DuckDB or Polars over the Parquet files of the lake's
Delta tables, and writes the answer as CSV for bench/run to compare with lake's.

    python peers.py duckdb|polars QUERY.sql LAKE_ROOT OUT.csv

Both read the same files the Delta tables hold (one ingest, nothing removed, so every Parquet
file in the table's folder is current). Polars runs the same SQL through its SQL context, with
`raw.<table>` written `raw_<table>`.
"""
import csv
import sys

engine, query_file, root, out = sys.argv[1:5]
sql = open(query_file).read()
tables = ["spotify_streams", "spotify_playlist_tracks"]
if engine == "duckdb":
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA raw")
    for t in tables:
        con.execute(f"CREATE VIEW raw.{t} AS SELECT * FROM read_parquet('{root}/raw/{t}/*.parquet')")
    rel = con.sql(sql)
    columns, rows = rel.columns, rel.fetchall()
elif engine == "polars":
    import polars as pl

    ctx = pl.SQLContext()
    for t in tables:
        ctx.register(f"raw_{t}", pl.scan_parquet(f"{root}/raw/{t}/*.parquet"))
    df = ctx.execute(sql.replace("raw.", "raw_"), eager=True)
    columns, rows = df.columns, df.rows()
else:
    sys.exit(f"unknown engine {engine}")
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(columns)
    w.writerows(rows)
