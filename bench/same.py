"""Whether CSV answers agree: `same` or what differs. Numbers agree within 0.001 (engines round
a value that ends in 5 at the fourth decimal either way, and print 8339.54 or 8339.540000);
the order of rows counts, as every query orders.

    python same.py lake.csv duckdb.csv polars.csv
"""
import csv
import sys


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def cell_same(a, b):
    try:
        return abs(float(a) - float(b)) <= 0.0011
    except ValueError:
        return a == b


def same(a, b):
    return len(a) == len(b) and all(
        len(x) == len(y) and all(cell_same(p, q) for p, q in zip(x, y)) for x, y in zip(a, b)
    )


base, *others = sys.argv[1:]
want = rows(base)
bad = [o for o in others if not same(rows(o), want)]
print("same" if not bad else "DIFFER: " + ", ".join(bad))
