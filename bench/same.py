"""Whether CSV answers agree: `same` or what differs. Numbers compare to 3 decimal places
(engines print 8339.54 and 8339.540000 alike); the order of rows counts, as every query orders.

    python same.py lake.csv duckdb.csv polars.csv
"""
import csv
import sys


def norm(path):
    rows = []
    with open(path, newline="") as f:
        for row in list(csv.reader(f))[1:]:
            cells = []
            for c in row:
                try:
                    cells.append(f"{float(c):.3f}")
                except ValueError:
                    cells.append(c)
            rows.append(cells)
    return rows


base, *others = sys.argv[1:]
want = norm(base)
bad = [o for o in others if norm(o) != want]
print("same" if not bad else "DIFFER: " + ", ".join(bad))
