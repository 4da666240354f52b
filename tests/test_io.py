"""ReadImages (reading bytes, the size cap, a file gone when read) and the JSONL sinks;
the URI side has tests/test_admitted.py."""

from __future__ import annotations

import shutil

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.spec import DecodeLimits
from tests.conftest import SAMPLES
from transforms.io import WriteDeadLetters, read_jsonl
from transforms.read_images import ReadImages
from transforms.records import DEAD_LETTER


def test_read_images_dedups_and_caps(tmp_path):
    shutil.copy(SAMPLES / "chelsea.jpg", tmp_path / "a.jpg")
    shutil.copy(SAMPLES / "coffee_cmyk.jpg", tmp_path / "big.jpg")  # ~150 kB
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{tmp_path / 'a.jpg'}\n{tmp_path / 'a.jpg'}\n")
    limits = DecodeLimits(max_bytes=100_000)
    p = TestPipeline()
    out = p | ReadImages([str(tmp_path / "*.jpg"), str(tmp_path / "a.*")], str(manifest), limits)
    assert_that(out.images | beam.Map(lambda i: (i.uri, len(i.payload), "read" in i.timings)),
                equal_to([(str(tmp_path / "a.jpg"), (SAMPLES / "chelsea.jpg").stat().st_size,
                           True)]), label="images")
    assert_that(out[DEAD_LETTER] | beam.Map(lambda d: (d["uri"], d["stage"], d["error_type"])),
                equal_to([(str(tmp_path / "big.jpg"), "read", "ImageTooLarge")]), label="dead")
    p.run().wait_until_finish()


def test_write_jsonl_roundtrip(tmp_path):
    rows = [{"uri": f"u{i}", "stage": "decode", "error_type": "X", "message": "m"}
            for i in range(3)]
    with TestPipeline() as p:
        _ = p | beam.Create(rows) | WriteDeadLetters(str(tmp_path), "r1")
    got = sorted(read_jsonl(str(tmp_path / "errors-*.jsonl")), key=lambda r: r["uri"])
    assert got == rows


def test_a_listed_file_gone_when_read_is_a_not_found_dead_letter(tmp_path):
    from transforms.read_images import ReadBytes
    from transforms.records import Item

    gone = str(tmp_path / "gone.jpg")
    (out,) = list(ReadBytes(DecodeLimits()).process(Item(gone, None)))
    record = out.value
    assert out.tag == DEAD_LETTER
    assert (record["uri"], record["stage"], record["error_type"]) == (gone, "read", "NotFound")
    assert record["message"].startswith(f"{gone}: not there when read")
