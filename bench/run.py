"""The body of bench/run: lake against DuckDB, Polars and psql on the same data, in one run.

    python bench/run.py N R     (run by bench/run, with the virtual environment's Python)

Every measurement alternates lake and its peers, R rounds each; a table gives medians, and
every ratio is the median of the ratios of the pairs (a noisy machine shifts both sides of a
pair alike). Max RSS is each process's own peak (wait4). Progress goes to stderr, the tables
to stdout as Markdown.
"""
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N, R = int(sys.argv[1]), int(sys.argv[2])
ROOT = Path(__file__).resolve().parent.parent
LAKE = os.environ["BENCH_LAKE"]
WORK = Path(os.environ.get("BENCH_WORK") or tempfile.mkdtemp(prefix="lake-bench."))
WORK.mkdir(parents=True, exist_ok=True)
PY = sys.executable
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432/test")
PSQL = ["psql", PG, "-v", "ON_ERROR_STOP=1", "-q"]
# One more day of plays with `lake bench generate`'s default shape (16 plays per listener).
DAY = 16 * 1000
os.environ["PGOPTIONS"] = "-c client_min_messages=warning"
SECTIONS = set(os.environ.get("BENCH_SECTIONS", "import,queries,refresh,export,commits").split(","))
os.chdir(WORK)


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, stdout=subprocess.DEVNULL):
    """Runs `cmd`; returns (seconds, max RSS in MiB). A failure stops the benchmark."""
    with open(WORK / "stderr.txt", "w+") as err:
        started = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=stdout, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        secs = time.perf_counter() - started
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            sys.exit(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{err.read()}")
    return secs, usage.ru_maxrss / 1024


def lake(*args):
    return [LAKE, "-q", *args]


def out(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def med(xs):
    return statistics.median(xs)


def pairs(a, b):
    """Median of b[i] / a[i], and the ratios."""
    rs = [y / x for x, y in zip(a, b)]
    return med(rs), ", ".join(f"{r:.2f}" for r in rs)


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print(flush=True)


def copy_state(src, dst):
    """The lake folder and the SQLite warehouse, from `src` to `dst` (folders of WORK)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src / "lake", dst / "lake")
    if (src / "warehouse.db").exists():
        shutil.copy2(src / "warehouse.db", dst / "warehouse.db")


def restore(saved):
    shutil.rmtree("lake", ignore_errors=True)
    Path("warehouse.db").unlink(missing_ok=True)
    shutil.copytree(saved / "lake", "lake")
    if (saved / "warehouse.db").exists():
        shutil.copy2(saved / "warehouse.db", "warehouse.db")


# --- The machine, the tools, the data ----------------------------------------------------
import datafusion  # noqa: E402
import duckdb  # noqa: E402
import polars  # noqa: E402

cpu = next(
    (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
    platform.processor(),
)
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
print(f"# lake benchmarks, {N:,} plays, {R} rounds\n")
print(
    f"{out([LAKE, '--version'])}; DuckDB {duckdb.__version__}, Polars {polars.__version__}, "
    f"DataFusion (Python) {datafusion.__version__}, "
    f"{out(['psql', '--version'])}; {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB; "
    f"{platform.platform()}\n"
)
run(lake("init", "."))
toml = Path("lake.toml").read_text().replace('# personal_data = "drop"', 'personal_data = "keep"')
Path("lake.toml").write_text(toml)
say(f"generating {N:,} plays ...")
gen_secs, _ = run(lake("bench", "generate", "--plays", str(N), "--out", "export", "--api", "api"))
run(lake("bench", "generate", "--from", str(N), "--plays", str(DAY), "--out", "day"))
size = sum(f.stat().st_size for f in Path("export").iterdir())
print(
    f"`lake bench generate --plays {N}` wrote {size / 2**20:,.0f} MiB of extended streaming "
    f"history in {len(list(Path('export').iterdir()))} files ({gen_secs:.0f} s): 1,000 "
    f"listeners, 2,000 artists played with a heavy skew, 16-play sessions, skips, podcasts, "
    f"audiobooks and null fields; and the dimension, {sum(1 for _ in open('api/tracks.ndjson')):,} "
    f"catalog tracks. One more day is {DAY:,} plays.\n"
)

# --- Import --------------------------------------------------------------------------------
def section(name):
    return name in SECTIONS


if not section("import"):
    sys.exit("BENCH_SECTIONS must include import: every other section reads its tables")
say("import ...")
Path("duck_import.py").write_text(
    "import duckdb\n"
    "con = duckdb.connect()\n"
    "con.execute(\"SET preserve_insertion_order = false\")\n"
    "con.execute(\"COPY (SELECT * FROM read_json('export/*.json', format = 'array', "
    "union_by_name = true)) TO 'duck.parquet' (FORMAT parquet, COMPRESSION zstd)\")\n"
)
imp = {"lake": [], "duckdb": []}
for _ in range(R):
    shutil.rmtree("lake", ignore_errors=True)
    Path("duck.parquet").unlink(missing_ok=True)
    imp["lake"].append(run(lake("ingest", "spotify-export", "export")))
    imp["duckdb"].append(run([PY, "duck_import.py"]))
rows = int(out(lake("query", "--format", "csv", "SELECT count(*) AS n FROM raw.spotify_streams")).split()[-1])
duck_rows = duckdb.sql("SELECT count(*) FROM 'duck.parquet'").fetchall()[0][0]
print("## Import: the JSON export into a table\n")
print(f"lake landed {rows:,} rows in raw.spotify_streams (Delta, snappy Parquet as delta-rs writes it); DuckDB wrote {duck_rows:,} to one zstd Parquet file.\n")
table(
    ["import", "median s", "rows/s", "MB/s of JSON", "max RSS MiB", "runs s"],
    [
        [name, f"{med(s for s, _ in imp[k]):.2f}", f"{N / med(s for s, _ in imp[k]):,.0f}",
         f"{size / 1e6 / med(s for s, _ in imp[k]):.0f}", f"{max(m for _, m in imp[k]):.0f}",
         ", ".join(f"{s:.2f}" for s, _ in imp[k])]
        for k, name in [("lake", "`lake ingest spotify-export`"), ("duckdb", "DuckDB `read_json` -> Parquet")]
    ],
)
ratio, each = pairs([s for s, _ in imp["lake"]], [s for s, _ in imp["duckdb"]])
print(f"lake's import speed / DuckDB's (DuckDB time / lake time), median of pairs: **{ratio:.2f}** ({each})\n")

# --- The analyst queries ---------------------------------------------------------------------
say("queries ...")
PEERS = ("duckdb", "polars", "datafusion")
for src, t in [("tracks", "spotify_tracks"), ("playlist_tracks", "spotify_playlist_tracks"), ("recently_played", "spotify_recently_played")]:
    run(lake("ingest", f"api/{src}.ndjson", "--table", f"raw.{t}"))
results = []
for q in sorted((ROOT / "bench" / "queries").glob("*.sql")) if section("queries") else []:
    t = {"lake": [], "duckdb": [], "polars": [], "datafusion": []}
    rss = []
    for _ in range(R):
        with open("lake.csv", "w") as f:
            secs, mib = run(lake("query", "--format", "csv", "-f", str(q)), stdout=f)
        t["lake"].append(secs)
        rss.append(mib)
        for engine in PEERS:
            run([PY, str(ROOT / "bench" / "peers.py"), engine, str(q), "lake", f"{engine}.csv", f"{engine}.secs"])
            t[engine].append(float(Path(f"{engine}.secs").read_text()))
    same = out(["python3", str(ROOT / "bench" / "same.py"), "lake.csv", *(f"{e}.csv" for e in PEERS)])
    results.append((q.stem, t, max(rss), same))
if section("queries"):
    print("## The analyst queries\n")
    print(
        "`lake query -f bench/queries/<name>.sql` as an analyst runs it: a cold process that "
        "opens the Delta tables, so its time includes starting up. DuckDB and Polars get the same "
        "SQL over the same Parquet files (the files the tables' Delta logs hold), timed inside "
        "Python from connecting to the last row fetched, so their interpreter start is left out. "
        "DataFusion is a warm session of its Python bindings (same major version as lake's) with "
        "the files registered before the clock starts. Ratios are medians of the pairs' ratios: "
        "lake / best peer is lake's time over the faster of DuckDB and Polars in the same round "
        "(below 1, lake is faster); lake / DataFusion budget is lake's time over 1.05 x "
        "DataFusion's + 30 ms (below 1, lake's overhead is inside the budget).\n"
    )
    rows_out = []
    best_ratios = []
    for name, t, rss, same in results:
        best = [min(a, b) for a, b in zip(t["duckdb"], t["polars"])]
        b, each = pairs(best, t["lake"])
        best_ratios.append(b)
        budget = [1.05 * x + 0.030 for x in t["datafusion"]]
        o, _ = pairs(budget, t["lake"])
        rows_out.append([name, f"{med(t['lake']):.3f}", f"{med(t['duckdb']):.3f}", f"{med(t['polars']):.3f}",
                         f"{med(t['datafusion']):.3f}", f"**{b:.2f}** ({each})", f"{o:.2f}", f"{rss:.0f}", same])
    start = {"lake": [], "duckdb": [], "polars": []}
    for _ in range(R):
        start["lake"].append(run(lake("query", "SELECT 1"))[0])
        start["duckdb"].append(run([PY, "-c", "import duckdb; duckdb.sql('SELECT 1').fetchall()"])[0])
        start["polars"].append(run([PY, "-c", "import polars; polars.select(polars.lit(1))"])[0])
    rows_out.append(["cold start: `lake query \"SELECT 1\"`, or Python importing the peer",
                     f"{med(start['lake']):.3f}", f"{med(start['duckdb']):.3f}", f"{med(start['polars']):.3f}",
                     "", "", "", "", ""])
    table(["query", "lake s", "DuckDB s", "Polars s", "DataFusion s", "lake / best peer (pairs)",
           "lake / DataFusion budget", "lake max RSS MiB", "answers"], rows_out)
    print(f"Median over the queries of lake / best peer: **{med(best_ratios):.2f}**\n")

# --- Refresh -------------------------------------------------------------------------------
if section("refresh"):
    say("refresh ...")
    first = run(lake("refresh"))
    # The whole refresh again from scratch, under a 2 GiB pool.
    bounded = run(lake("refresh", "--full-refresh", "--set", "query.memory_limit=2GiB"))
    ingest_day = run(lake("ingest", "spotify-export", "day"))
    copy_state(WORK, WORK / "with_day")
    ref = {"incremental": [], "full": []}
    for _ in range(R):
        restore(WORK / "with_day")
        ref["incremental"].append(run(lake("refresh")))
        restore(WORK / "with_day")
        ref["full"].append(run(lake("refresh", "--full-refresh")))
    largest = out(lake("query", "--format", "csv",
                       "SELECT count(*) AS n FROM curated.export_plays")).split()[-1]
    print("## Refresh of the example project\n")
    print(
        f"`lake init`'s project (8 models, their data tests, the export of 5 tables to the SQLite "
        f"warehouse) over the imported plays and the API rows. The first `lake refresh` builds "
        f"everything; then one more day ({DAY:,} plays) lands (`lake ingest spotify-export day`, "
        f"{ingest_day[0]:.2f} s, max RSS {ingest_day[1]:.0f} MiB) and `lake refresh` runs "
        f"incrementally (export_plays merges the new plays; the warehouse gets only them), against "
        f"`lake refresh --full-refresh` of the same state. curated.export_plays then holds "
        f"{int(largest):,} rows.\n"
    )
    table(
        ["refresh", "median s", "max RSS MiB", "runs s"],
        [["first `lake refresh` (everything built and exported)", f"{first[0]:.2f}", f"{first[1]:.0f}", "one run"],
         ["`lake refresh --full-refresh --set query.memory_limit=2GiB`", f"{bounded[0]:.2f}", f"{bounded[1]:.0f}", "one run"]]
        + [[name, f"{med(s for s, _ in ref[k]):.2f}", f"{max(m for _, m in ref[k]):.0f}", ", ".join(f"{s:.2f}" for s, _ in ref[k])]
           for k, name in [("incremental", "`lake refresh` after one more day"), ("full", "`lake refresh --full-refresh`, same state")]],
    )
    ratio, each = pairs([s for s, _ in ref["incremental"]], [s for s, _ in ref["full"]])
    print(f"full refresh time / incremental time, median of pairs: **{ratio:.2f}** ({each})\n")
    # What the day's refresh did, model by model: rows written (and groups recomputed), and the
    # rows each table sent to the warehouse (+ upserted, - deleted).
    restore(WORK / "with_day")
    day_report = subprocess.run([LAKE, "refresh"], check=True, capture_output=True, text=True).stdout
    print("The day's `lake refresh`, as it reports itself:\n")
    print("```text\n" + day_report.strip() + "\n```\n")

# --- Export --------------------------------------------------------------------------------
if section("export") and section("refresh"):
    say("export ...")
    subprocess.run([*PSQL, "-c", "DROP SCHEMA IF EXISTS lake_bench CASCADE; CREATE SCHEMA lake_bench"], check=True)
    pg = ["--set", f"warehouse.url={PG}", "--set", "warehouse.schema=lake_bench"]
    run(lake("query", "--format", "csv", "--output", "rows.csv", "SELECT * FROM curated.export_plays"))
    csv_bytes = Path("rows.csv").stat().st_size
    run(lake("export", "--select", "export_plays", *pg))
    subprocess.run([*PSQL, "-c", "CREATE TABLE lake_bench.template (LIKE lake_bench.export_plays)"], check=True)
    with open("rows.csv", newline="") as f, open("inserts.sql", "w") as sql:
        reader = csv.reader(f)
        cols = ", ".join(f'"{h}"' for h in next(reader))
        lit = lambda v: "NULL" if v == "" else "'" + v.replace("'", "''") + "'"
        batch = []
        def flush():
            sql.write(f"INSERT INTO lake_bench.t ({cols}) VALUES\n" + ",\n".join(batch) + ";\n")
            batch.clear()
        for r in reader:
            batch.append("(" + ", ".join(lit(v) for v in r) + ")")
            if len(batch) == 1000:
                flush()
        if batch:
            flush()
    fresh = [*PSQL, "-c", "DROP TABLE IF EXISTS lake_bench.t; CREATE TABLE lake_bench.t (LIKE lake_bench.template)"]
    exp = {"lake": [], "copy": [], "inserts": []}
    for _ in range(R):
        subprocess.run([*PSQL, "-c", "DROP TABLE lake_bench.export_plays"], check=True)
        exp["lake"].append(run(lake("export", "--select", "export_plays", *pg)))
        subprocess.run(fresh, check=True)
        exp["copy"].append(run([*PSQL, "-c", "\\copy lake_bench.t from 'rows.csv' csv header"]))
        subprocess.run(fresh, check=True)
        exp["inserts"].append(run([*PSQL, "-f", "inserts.sql"]))
    subprocess.run([*PSQL, "-c", "DROP SCHEMA lake_bench CASCADE"], check=True)
    n_rows = int(largest)
    print("## Export to PostgreSQL\n")
    print(
        f"The largest curated table, curated.export_plays ({n_rows:,} rows, {csv_bytes / 2**20:,.0f} MiB as CSV), into "
        f"the local PostgreSQL: `lake export` (COPY into a staging table, the unique index on the "
        f"key, the swap, the record in `_lake.exports`), against `psql \\copy` of the same rows "
        f"from CSV into a table without an index (the limit) and `psql -f` of INSERTs of 1,000 rows "
        f"each (common practice).\n"
    )
    table(
        ["load", "median s", "rows/s", "max RSS MiB", "runs s"],
        [[name, f"{med(s for s, _ in exp[k]):.2f}", f"{n_rows / med(s for s, _ in exp[k]):,.0f}",
          f"{max(m for _, m in exp[k]):.0f}" if k == "lake" else "", ", ".join(f"{s:.2f}" for s, _ in exp[k])]
         for k, name in [("lake", "`lake export`"), ("copy", "`psql \\copy ... csv`"), ("inserts", "INSERTs of 1,000 rows")]],
    )
    c, ceach = pairs([s for s, _ in exp["lake"]], [s for s, _ in exp["copy"]])
    i, ieach = pairs([s for s, _ in exp["lake"]], [s for s, _ in exp["inserts"]])
    print(f"`\\copy` time / lake time: **{c:.2f}** ({ceach}); INSERTs time / lake time: **{i:.2f}** ({ieach})\n")
    for f in ("rows.csv", "inserts.sql"):
        Path(f).unlink()

# --- A table with 10,000 commits -------------------------------------------------------------
if section('commits'):
    commits = int(os.environ.get("BENCH_COMMITS", "10000"))
    say(f"{commits:,} commits ...")
    made = run([LAKE, "-q", "--root", "commits", "bench", "commits", "-n", str(commits)])
    log = Path("commits/raw/bench_commits/_delta_log")
    checkpoints = len(list(log.glob("*.checkpoint.parquet")))
    open_q = [LAKE, "-q", "--root", "commits", "query", "SELECT count(*) FROM raw.bench_commits"]
    opened = {"delta": [run(open_q) for _ in range(R)]}
    hidden = Path("hidden")
    hidden.mkdir()
    for f in [*log.glob("*.checkpoint.parquet"), log / "_last_checkpoint"]:
        f.rename(hidden / f.name)
    opened["none"] = [run(open_q) for _ in range(R)]
    for f in hidden.iterdir():
        f.rename(log / f.name)
    run([LAKE, "-q", "--root", "commits", "maintain", "raw.bench_commits"])
    opened["maintained"] = [run(open_q) for _ in range(R)]
    print(f"## Opening a table with {commits:,} commits\n")
    print(
        f"`lake bench commits -n {commits}` appended {commits:,} one-row commits as a writer makes "
        f"them ({made[0]:.0f} s; Delta wrote a checkpoint every 100, {checkpoints} in all). A cold "
        f"`lake query \"SELECT count(*) FROM raw.bench_commits\"`:\n"
    )
    table(
        ["log", "median s", "max RSS MiB", "runs s"],
        [[name, f"{med(s for s, _ in opened[k]):.3f}", f"{max(m for _, m in opened[k]):.0f}", ", ".join(f"{s:.3f}" for s, _ in opened[k])]
         for k, name in [("delta", "as written: Delta's checkpoints"), ("none", "checkpoints hidden: every commit replayed"),
                         ("maintained", "after `lake maintain` (compacted, checkpointed)")]],
    )
if not os.environ.get("BENCH_KEEP"):
    shutil.rmtree(WORK)
