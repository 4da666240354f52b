"""Manifest reading: line parsing, byte ranges that cover every line once, and
ReadManifest over local files (ranges and gzip) and over a real GCS emulator."""

from __future__ import annotations

import gzip
import io
import random

import pytest
import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.audit import input_uris
from transforms.manifest import (ReadManifest, lines_in_range, manifest_file_uris, manifest_uri,
                                 range_uris, ranges_of, splittable_size)


def test_manifest_uri_parsing():
    assert manifest_uri("  gs://b/x.jpg \n") == "gs://b/x.jpg"
    assert manifest_uri("gs://b/y.jpg\r\n") == "gs://b/y.jpg"
    assert manifest_uri("# comment") is None
    assert manifest_uri("   ") is None


def test_ranges_cover_the_file_contiguously():
    for size, min_bytes, most in [(0, 10, 8), (1, 10, 8), (95, 10, 8), (100, 10, 20),
                                  (10 ** 9, 1 << 20, 256)]:
        pieces = ranges_of("m.txt", size, min_bytes, most)
        assert pieces[0][1] == 0 and pieces[-1][2] == size
        assert all(a[2] == b[1] for a, b in zip(pieces, pieces[1:]))
        assert 1 <= len(pieces) <= most
        assert len(pieces) == 1 or min(e - s for _, s, e in pieces) >= min_bytes
    assert len(ranges_of("m.txt", 60_000_000)) == 57      # 1M GCS URIs, 1 MiB ranges


def test_every_line_in_exactly_one_range():
    """Random lines (CRLF, blanks, a line of one byte, no final newline) cut at every
    kind of boundary: the ranges' lines, in order, are the file's lines."""
    rng = random.Random(7)
    for trial in range(200):
        lines = [("x" * rng.randint(0, 12)).encode() + rng.choice([b"\n", b"\r\n"])
                 for _ in range(rng.randint(0, 30))]
        if lines and rng.random() < 0.5:
            lines[-1] = lines[-1].rstrip(b"\r\n") or b"y"
        data = b"".join(lines)
        cuts = sorted(rng.sample(range(1, max(2, len(data))), min(rng.randint(0, 6),
                                                                  max(0, len(data) - 1))))
        bounds = [0] + cuts + [len(data)]
        got = []
        for start, end in zip(bounds, bounds[1:]):
            got += list(lines_in_range(io.BytesIO(data), start, end))
        assert got == lines, (trial, data, bounds)


def _write(path, uris, newline="\n"):
    path.write_bytes(newline.join(uris).encode())
    return str(path)


def test_read_manifest_in_ranges_keeps_every_line_and_duplicates(tmp_path):
    uris = [f"gs://b/img-{i:05d}.jpg" for i in range(2000)] + ["gs://b/img-00007.jpg"]
    lines = ["# listed today", ""] + uris
    path = _write(tmp_path / "m.txt", lines, "\r\n")
    size = splittable_size(path)
    assert size == len("\r\n".join(lines).encode())
    pieces = ranges_of(path, size, 1000, 64)
    assert len(pieces) == size // 1000 > 40
    assert sorted(u for p in pieces for u in range_uris(p)) == sorted(uris)
    p = TestPipeline()
    assert_that(p | ReadManifest(path, min_bytes=1000, max_ranges=64), equal_to(uris))
    p.run().wait_until_finish()


def test_gzip_manifest_is_streamed_by_one_reader(tmp_path):
    uris = ["gs://b/1.jpg", "gs://b/2.jpg", "gs://b/1.jpg"]
    path = tmp_path / "m.txt.gz"
    path.write_bytes(gzip.compress("\n".join(uris).encode()))
    assert splittable_size(str(path)) is None
    assert splittable_size(str(tmp_path / "missing.txt")) is None
    assert list(manifest_file_uris(str(path))) == uris
    assert input_uris((), str(path)) == ["gs://b/1.jpg", "gs://b/2.jpg"]   # audit reads alike
    p = TestPipeline()
    out = p | ReadManifest(str(path), min_bytes=4)
    assert_that(out, equal_to(uris))
    p.run().wait_until_finish()


@pytest.mark.slow
def test_read_manifest_in_ranges_from_gcs(gcs_client):
    """Seek and readline on a real GCS object (the emulator), cut into 40-byte ranges."""
    uris = [f"gs://bucket/photos/p-{i:04d}.jpg" for i in range(300)]
    gcs_client.bucket("bucket").blob("lists/m.txt").upload_from_string("\n".join(uris) + "\n")
    path = "gs://bucket/lists/m.txt"
    size = splittable_size(path)
    assert size == len("\n".join(uris)) + 1
    pieces = ranges_of(path, size, 40, 256)
    assert len(pieces) == size // 40 > 200
    assert sorted(u for piece in pieces for u in range_uris(piece)) == uris
    p = TestPipeline()
    assert_that(p | ReadManifest(path, min_bytes=500), equal_to(uris))
    p.run().wait_until_finish()


def test_read_manifest_graph_has_the_range_read_only_when_splittable(tmp_path):
    plain = _write(tmp_path / "m.txt", ["gs://b/1.jpg"])
    zipped = tmp_path / "m.txt.gz"
    zipped.write_bytes(gzip.compress(b"gs://b/1.jpg"))
    for path, expected, absent in [(plain, "ReadRange", "ParseManifest"),
                                   (str(zipped), "ParseManifest", "ReadRange")]:
        p = beam.Pipeline()
        _ = p | "M" >> ReadManifest(path)
        labels = {t.full_label for t in p.transforms_stack[0].parts[0].parts}
        assert f"M/{expected}" in labels and f"M/{absent}" not in labels
