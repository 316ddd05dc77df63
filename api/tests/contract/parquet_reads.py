"""Reads a job's Parquet export back with DuckDB and checks it against the
CSV export of the same job: the same detections, with the types the
Parquet schema promises.

    parquet_reads.py EXPORT.parquet EXPORT.csv [--require-times]

With --require-times, at least one detection must have an absolute time
(its recording's start known), so that the timestamps are compared too.
Exits non-zero, saying what differs, when the file cannot be read or does
not match.
"""

import csv
import math
import sys

import duckdb

EXPECTED_TYPES = {
    "source_path": "VARCHAR",
    "file_sha256": "VARCHAR",
    "window_index": "INTEGER",
    "start_s": "DOUBLE",
    "end_s": "DOUBLE",
    "species": "VARCHAR",
    "scientific_name": "VARCHAR",
    "confidence": "FLOAT",
    "model_version": "VARCHAR",
    "threshold": "FLOAT",
    "start_at": "TIMESTAMP WITH TIME ZONE",
    "end_at": "TIMESTAMP WITH TIME ZONE",
    "utc_offset_minutes": "INTEGER",
}


def fail(message):
    print(f"parquet export: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parquet_path, csv_path = sys.argv[1], sys.argv[2]
    require_times = "--require-times" in sys.argv[3:]
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    described = db.execute(
        "DESCRIBE SELECT * FROM read_parquet(?)", [parquet_path]
    ).fetchall()
    types = {name: kind for name, kind, *_ in described}
    if types != EXPECTED_TYPES:
        fail(f"columns and types {types}, expected {EXPECTED_TYPES}")

    keys = ["source_path", "window_index", "species"]
    rows = db.execute(
        "SELECT source_path, window_index, species, file_sha256, start_s, end_s, "
        "confidence, model_version, threshold, "
        "strftime(start_at, '%Y-%m-%dT%H:%M:%S.%g') AS start_at, utc_offset_minutes "
        "FROM read_parquet(?) ORDER BY source_path, window_index, species",
        [parquet_path],
    ).fetchall()
    with open(csv_path, newline="", encoding="utf-8") as f:
        expected = sorted(
            csv.DictReader(f),
            key=lambda r: (r["source_path"], int(r["window_index"]), r["species"]),
        )
    if not expected:
        fail("the CSV export has no detections to compare with")
    if len(rows) != len(expected):
        fail(f"{len(rows)} rows, the CSV has {len(expected)}")
    for got, want in zip(rows, expected):
        (path, window, species, sha, start, end, confidence, model, threshold,
         start_at, offset) = got
        if (path, window, species) != (
            want["source_path"], int(want["window_index"]), want["species"]
        ):
            fail(f"row {got} where the CSV has {want}")
        close = lambda a, b, tol: math.isclose(a, float(b), abs_tol=tol)
        if not (
            sha == want["file_sha256"]
            and close(start, want["start_s"], 5e-4)
            and close(end, want["end_s"], 5e-4)
            and close(confidence, want["confidence"], 5e-5)
            and model == want["model_version"]
            and close(threshold, want["threshold"], 5e-5)
        ):
            fail(f"row {got} differs from the CSV's {want}")
        want_start = want["start_at"].rstrip("Z")
        if (start_at or "") != want_start:
            fail(f"start_at {start_at!r}, the CSV has {want['start_at']!r}")
        want_offset = int(want["utc_offset_minutes"]) if want["utc_offset_minutes"] else None
        if offset != want_offset:
            fail(f"utc_offset_minutes {offset!r}, the CSV has {want_offset!r}")
    timed = sum(1 for r in rows if r[9] is not None)
    if require_times and timed == 0:
        fail("no detection has an absolute time to compare")
    print(f"parquet export: {len(rows)} detections ({timed} with absolute times) read back with DuckDB {duckdb.__version__}")


if __name__ == "__main__":
    main()
