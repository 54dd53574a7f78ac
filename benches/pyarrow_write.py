"""pyarrow writing the rows of the Parquet bench, for comparison.

Run `cargo bench --features parquet --bench parquet` first: it leaves its
zstd file in target/edgestream-bench-events.parquet. This script reads it
back into a pyarrow Table (not timed), then times `pq.write_table` of the
same rows with the same settings (zstd level 3 or snappy, 65,536-row row
groups, dictionaries and page statistics), best of 5, and prints events/s.

    python3 benches/pyarrow_write.py [path]
"""

import io
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

path = sys.argv[1] if len(sys.argv) > 1 else "target/edgestream-bench-events.parquet"
table = pq.read_table(path)
rows = table.num_rows
print(f"pyarrow {pa.__version__}, {rows} rows, {table.num_columns} columns")
for codec, level in [("zstd", 3), ("snappy", None)]:
    best = float("inf")
    size = 0
    for _ in range(5):
        sink = io.BytesIO()
        start = time.perf_counter()
        pq.write_table(
            table, sink, compression=codec, compression_level=level, row_group_size=65536,
            use_dictionary=True, write_statistics=True,
        )
        best = min(best, time.perf_counter() - start)
        size = sink.tell()
    print(f"{codec}: {best * 1000:.0f} ms, {rows / best / 1e6:.2f} M events/s, {size} bytes")
