"""Reads edgestream's Parquet files with real readers: pyarrow and DuckDB.

Usage: check_sink.py <dir of Hive-partitioned files> <expected events .ndjson> <expected windows .json> [<dir of CSV files> [<dir of window-result files>]]

- pyarrow: every file, its schema and key-value metadata, and every value
  against the events the Rust test wrote (floats bit for bit, times exact);
- DuckDB: the whole directory with hive_partitioning, filtered on a
  partition column, aggregated per minute and compared with the window
  results of edgestream's own `Windows`.
Exits non-zero with a message on the first mismatch.
"""

import glob
import json
import os
import struct
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


def bits(x):
    return struct.pack("<d", x)


def fail(msg):
    print(f"MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    root, expected_path, windows_path = sys.argv[1:4]
    expected = {}
    with open(expected_path) as f:
        for line in f:
            e = json.loads(line)
            expected[e["id"]] = e
    files = sorted(glob.glob(os.path.join(root, "**", "*.parquet"), recursive=True))
    if not files:
        fail("no files")

    seen = 0
    for path in files:
        meta = pq.read_metadata(path)
        if (meta.metadata or {}).get(b"edgestream.schema") != b"1":
            fail(f"{path}: schema version metadata missing")
        for g in range(meta.num_row_groups):
            sorting = meta.row_group(g).sorting_columns
            if not sorting or sorting[0].column_index != 0 or sorting[0].descending:
                fail(f"{path}: row group {g} does not say it is sorted by ts: {sorting}")
        table = pq.read_table(path)
        schema = table.schema
        want = {
            "ts": pa.timestamp("ns", tz="UTC"),
            "tenant": pa.dictionary(pa.int32(), pa.string()),
            "stream": pa.dictionary(pa.int32(), pa.string()),
            "id": pa.string(),
            "region": pa.string(),
            "temp_c": pa.float64(),
            "lat": pa.float64(),
            "lon": pa.float64(),
        }
        for name, typ in want.items():
            if schema.field(name).type != typ:
                fail(f"{path}: column {name} is {schema.field(name).type}, not {typ}")
        if not pa.types.is_map(schema.field("dims").type) or schema.field("fields").type.item_type != pa.float64():
            fail(f"{path}: map columns are {schema.field('dims').type} / {schema.field('fields').type}")
        # The partition directories agree with the rows.
        parts = dict(p.split("=", 1) for p in os.path.relpath(path, root).split(os.sep)[:-1])
        ts = table.column("ts").cast(pa.int64()).to_pylist()
        cols = {name: table.column(name).to_pylist() for name in ["tenant", "stream", "id", "region", "temp_c", "dims", "fields", "lat", "lon"]}
        for i in range(table.num_rows):
            e = expected.get(cols["id"][i])
            if e is None:
                fail(f"{path}: unknown id {cols['id'][i]}")
            if ts[i] != e["ts"]:
                fail(f"{e['id']}: ts {ts[i]} != {e['ts']}")
            for name in ["tenant", "stream", "region"]:
                if cols[name][i] != e[name]:
                    fail(f"{e['id']}: {name} {cols[name][i]!r} != {e[name]!r}")
            if parts.get("tenant") != e["tenant"]:
                fail(f"{e['id']} is in partition {parts}")
            if bits(cols["temp_c"][i]) != bits(e["temp_c"]):
                fail(f"{e['id']}: temp_c {cols['temp_c'][i]!r} != {e['temp_c']!r}")
            dims = dict(cols["dims"][i])
            if dims != e["dims"]:
                fail(f"{e['id']}: dims {dims} != {e['dims']}")
            fields = dict(cols["fields"][i])
            if fields.keys() != e["fields"].keys() or any(bits(fields[k]) != bits(v) for k, v in e["fields"].items()):
                fail(f"{e['id']}: fields {fields} != {e['fields']}")
            for name in ["lat", "lon"]:
                got, want_v = cols[name][i], e.get(name)
                if (got is None) != (want_v is None) or (got is not None and bits(got) != bits(want_v)):
                    fail(f"{e['id']}: {name} {got} != {want_v}")
            seen += 1
    if seen != len(expected):
        fail(f"pyarrow read {seen} rows, expected {len(expected)}")
    print(f"pyarrow {pa.__version__}: {len(files)} files, {seen} rows, every value equal")

    with open(windows_path) as f:
        windows = json.load(f)
    con = duckdb.connect()
    rows = con.execute(
        f"""
        SELECT epoch_ns(ts) // 60000000000 * 60000000000 AS start, count(*), sum(temp_c), min(temp_c), max(temp_c)
        FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)
        WHERE tenant = 'acme' AND date = DATE '2026-11-28' AND hour >= '04'
        GROUP BY start ORDER BY start
        """
    ).fetchall()
    if len(rows) != len(windows):
        fail(f"DuckDB has {len(rows)} windows, edgestream {len(windows)}")
    for (start, count, total, lo, hi), w in zip(rows, windows):
        if start != w["start"] or count != w["count"] or bits(lo) != bits(w["min"]) or bits(hi) != bits(w["max"]):
            fail(f"window {w}: DuckDB says {(start, count, total, lo, hi)}")
        if abs(total - w["sum"]) > 1e-9 * max(1.0, abs(w["sum"])):
            fail(f"window {w}: DuckDB sum {total}")
    print(f"DuckDB {duckdb.__version__}: {len(rows)} per-minute windows of tenant acme match edgestream's")

    if len(sys.argv) > 4:
        check_csv(con, sys.argv[4], expected, windows)
    if len(sys.argv) > 5:
        check_results(sys.argv[5], windows)


def check_results(results_root, windows):
    """pyarrow reads the window-result files: types, and the aggregates."""
    files = sorted(glob.glob(os.path.join(results_root, "**", "*.parquet"), recursive=True))
    if not files:
        fail("no result files")
    tables = []
    for path in files:
        meta = pq.read_metadata(path)
        if (meta.metadata or {}).get(b"edgestream.result_schema") != b"1":
            fail(f"{path}: result schema version metadata missing")
        tables.append(pq.read_table(path))
    table = pa.concat_tables(tables)
    schema = table.schema
    for name, typ in {"window_start": pa.timestamp("ns", tz="UTC"), "events": pa.uint64(), "temp_c_min": pa.float64(), "is_final": pa.bool_()}.items():
        if schema.field(name).type != typ:
            fail(f"result column {name} is {schema.field(name).type}, not {typ}")
    rows = sorted(zip(
        table.column("window_start").cast(pa.int64()).to_pylist(),
        table.column("events").to_pylist(),
        table.column("temp_c_sum").to_pylist(),
        table.column("temp_c_min").to_pylist(),
        table.column("temp_c_max").to_pylist(),
    ))
    if len(rows) != len(windows):
        fail(f"{len(rows)} result rows, {len(windows)} windows")
    for (start, events, total, lo, hi), w in zip(rows, windows):
        if (start, events) != (w["start"], w["count"]) or bits(total) != bits(w["sum"]) or bits(lo) != bits(w["min"]) or bits(hi) != bits(w["max"]):
            fail(f"result row {(start, events, total, lo, hi)} != window {w}")
    print(f"pyarrow: {len(files)} window-result files, {len(rows)} rows, every aggregate equal")


def check_csv(con, csv_root, expected, windows):
    """DuckDB's read_csv detects the types and finds the same data."""
    source = f"read_csv('{csv_root}/**/*.csv', hive_partitioning = true)"
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {source})").fetchall())
    want = {"ts": "TIMESTAMP WITH TIME ZONE", "tenant": "VARCHAR", "id": "VARCHAR", "region": "VARCHAR", "temp_c": "DOUBLE", "lat": "DOUBLE"}
    for name, typ in want.items():
        if types.get(name) != typ:
            fail(f"CSV column {name} reads as {types.get(name)}, not {typ}")
    count = con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
    if count != len(expected):
        fail(f"CSV has {count} rows, expected {len(expected)}")
    rows = con.execute(
        f"""
        SELECT epoch_ns(ts) // 60000000000 * 60000000000 AS start, count(*), min(temp_c), max(temp_c)
        FROM {source} WHERE tenant = 'acme' GROUP BY start ORDER BY start
        """
    ).fetchall()
    if [(r[0], r[1], r[2], r[3]) for r in rows] != [(w["start"], w["count"], w["min"], w["max"]) for w in windows]:
        fail("CSV per-minute windows differ from edgestream's")
    print(f"DuckDB read_csv: {count} rows, types {want}, {len(rows)} windows match")


if __name__ == "__main__":
    main()
