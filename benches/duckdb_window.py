#!/usr/bin/env python3
"""DuckDB reference for benches/window.rs: the same workload, aggregated by
DuckDB's single-threaded, in-memory GROUP BY (device, 1 s window).

The events are generated exactly as `benches/window.rs` generates them (the
SplitMix64 stream of tests/common/traffic.rs, seed 7, three draws per
event: time jitter, device, value), loaded into an in-memory table (not
timed), then

    SELECT device, ts_ns // 1e9 AS w, count(*), sum(v), min(v), max(v)
    FROM events GROUP BY ALL

is timed, best of several runs, with one thread. The string column holds
the same `dev-00042` names the window bench resolves.

    python3 -m venv venv && venv/bin/pip install duckdb numpy
    venv/bin/python benches/duckdb_window.py --events 10000000
"""

import argparse
import time

import duckdb
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
C1 = np.uint64(0xBF58476D1CE4E5B9)
C2 = np.uint64(0x94D049BB133111EB)
START_NS = 1_795_838_400 * 1_000_000_000
GROUPS = 10_000


def splitmix(seed: int, n: int) -> np.ndarray:
    """The first n outputs of SplitMix64 seeded with `seed`."""
    with np.errstate(over="ignore"):
        state = np.uint64(seed) + GOLDEN * np.arange(1, n + 1, dtype=np.uint64)
        z = state
        z = (z ^ (z >> np.uint64(30))) * C1
        z = (z ^ (z >> np.uint64(27))) * C2
        return z ^ (z >> np.uint64(31))


def events(n: int):
    draws = splitmix(7, 3 * n).reshape(n, 3)
    i = np.arange(n, dtype=np.int64)
    jitter = (draws[:, 0] % np.uint64(40_000)).astype(np.int64) - 20_000
    ts_ns = START_NS + (i * 20 + jitter) * 1_000
    device = (draws[:, 1] % np.uint64(GROUPS)).astype(np.int64)
    value = (draws[:, 2] % np.uint64(10_000)).astype(np.float64) / 10.0
    names = np.array([f"dev-{d:05}" for d in range(GROUPS)], dtype=object)
    return ts_ns, names[device], value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    ts_ns, device, value = events(args.events)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    src = {"ts_ns": ts_ns, "device": device, "v": value}  # noqa: F841 (read by the SQL)
    con.execute("CREATE TABLE events AS SELECT * FROM src")
    query = (
        "SELECT device, ts_ns // 1000000000 AS w, count(*) AS c, sum(v) AS s, min(v) AS lo, max(v) AS hi "
        "FROM events GROUP BY ALL"
    )
    best = float("inf")
    groups = 0
    for _ in range(args.runs):
        t0 = time.perf_counter()
        groups = len(con.execute(query).fetchall())
        best = min(best, time.perf_counter() - t0)
    # Without materializing the result in Python: the aggregation alone
    # (every aggregate is read, so none is optimized away).
    agg_best = float("inf")
    for _ in range(args.runs):
        t0 = time.perf_counter()
        con.execute(f"SELECT count(*), sum(c), sum(s), min(lo), max(hi) FROM ({query})").fetchall()
        agg_best = min(agg_best, time.perf_counter() - t0)
    print(f"duckdb {duckdb.__version__}, 1 thread, {args.events} events, {groups} (group, window) results")
    print(f"  group by + fetch to Python: {best * 1e3:.1f} ms, {args.events / best / 1e6:.1f} M events/s")
    print(f"  group by only:              {agg_best * 1e3:.1f} ms, {args.events / agg_best / 1e6:.1f} M events/s")


if __name__ == "__main__":
    main()
