"""Nexmark q7 and q5 in DuckDB, single-threaded, over the bids the
example wrote, against edgestream's q7.csv / q5.csv in the same directory.

    cargo run --release --features parquet --example nexmark -- --events 1087000 --window 10s --out /tmp/nexmark
    python3 benches/nexmark_duckdb.py /tmp/nexmark 10

Prints the time and bids/s of each query (best of five, the table already
in memory) and checks that DuckDB's rows equal edgestream's.
"""

import csv
import sys
import time

import duckdb


def best_of(con, sql, runs=5):
    best, rows = None, None
    for _ in range(runs):
        start = time.perf_counter()
        rows = con.execute(sql).fetchall()
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return best, rows


def main():
    out, window_s = sys.argv[1], int(sys.argv[2])
    width_ms = window_s * 1000
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"CREATE TABLE bids AS SELECT auction, bidder, price, date_time "
        f"FROM read_parquet('{out}/bids/**/*.parquet')"
    )
    n = con.execute("SELECT count(*) FROM bids").fetchone()[0]
    bucket = f"(epoch_ms(date_time::TIMESTAMP) // {width_ms}) * {width_ms}"
    q7_sql = f"SELECT {bucket} AS w, max(price), count(*) FROM bids GROUP BY w ORDER BY w"
    q5_sql = f"SELECT {bucket} AS w, auction, count(*) FROM bids GROUP BY w, auction ORDER BY w, auction"
    q7_time, q7 = best_of(con, q7_sql)
    q5_time, q5 = best_of(con, q5_sql)

    def ours(name):
        with open(f"{out}/{name}") as f:
            return list(csv.reader(f))[1:]

    def epoch_ms(text):
        return con.execute(f"SELECT epoch_ms(TIMESTAMPTZ '{text}'::TIMESTAMP)").fetchone()[0]

    q7_ours = sorted((epoch_ms(r[0]), int(r[2]), int(r[3])) for r in ours("q7.csv"))
    assert q7_ours == [tuple(r) for r in q7], "q7 differs from DuckDB"
    q5_ours = sorted((epoch_ms(r[0]), int(r[2]), int(r[3])) for r in ours("q5.csv"))
    assert q5_ours == [tuple(r) for r in q5], "q5 differs from DuckDB"

    print(f"duckdb {duckdb.__version__}, threads = 1, {n} bids, {window_s} s windows (rows equal to edgestream's)")
    print(f"q7: {q7_time * 1e3:.1f} ms, {n / q7_time / 1e6:.2f} M bids/s, {len(q7)} windows")
    print(f"q5: {q5_time * 1e3:.1f} ms, {n / q5_time / 1e6:.2f} M bids/s, {len(q5)} rows")


if __name__ == "__main__":
    main()
