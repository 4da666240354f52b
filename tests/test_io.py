"""ReadImages (globs, manifest, de-duplication, size cap) and the JSONL sinks."""

from __future__ import annotations

import shutil

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.spec import DecodeLimits
from tests.conftest import SAMPLES
from transforms.io import (AdmittedUris, WriteDeadLetters, any_predictions, manifest_uri,
                           read_jsonl, ReadImages)
from transforms.records import DEAD_LETTER


def test_manifest_uri_parsing():
    assert manifest_uri("  gs://b/x.jpg \n") == "gs://b/x.jpg"
    assert manifest_uri("# comment") is None
    assert manifest_uri("   ") is None


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


def test_admitted_uris_from_a_gzip_manifest_once_each_minus_the_scored(tmp_path):
    """A gzip manifest with CRLF lines, comments, blanks, a duplicate and no final newline;
    a URI already in an earlier run's predictions is skipped, one only there is ignored."""
    import gzip
    import json

    lines = ["# listed by a query", "gs://b/1.jpg", "", "gs://b/2.jpg", "gs://b/1.jpg",
             "gs://b/3.jpg"]
    manifest = tmp_path / "uris.txt.gz"
    manifest.write_bytes(gzip.compress("\r\n".join(lines).encode()))
    earlier = tmp_path / "out"
    earlier.mkdir()
    (earlier / "predictions-r0-00000-of-00001.jsonl").write_text(
        "\n".join(json.dumps({"uri": u, "top_k": []}) for u in ("gs://b/2.jpg", "gs://b/9.jpg"))
        + "\n")
    p = TestPipeline()
    uris = p | AdmittedUris((), str(manifest), (str(earlier),))
    assert_that(uris, equal_to(["gs://b/1.jpg", "gs://b/3.jpg"]))
    p.run().wait_until_finish()


def test_the_scored_side_is_left_out_when_nothing_was_scored_yet(tmp_path, monkeypatch):
    """No predictions under any prefix when the graph is built: no Scored branch and no
    Flatten before the shuffle (the local runner copies every URI once more for one).
    A prefix that cannot be listed counts as having predictions."""
    from apache_beam.io.filesystems import FileSystems

    out = tmp_path / "out"
    assert any_predictions([str(out)]) is False and any_predictions([]) is False
    (tmp_path / "a.jpg").write_bytes(b"x")
    p = TestPipeline()
    uris = p | AdmittedUris((str(tmp_path / "*.jpg"),), None, (str(out),))
    assert_that(uris, equal_to([str(tmp_path / "a.jpg")]))
    labels = [t.unique_name for t in p.to_runner_api().components.transforms.values()]
    assert any("Join" in x for x in labels) and not any("Scored" in x or "Listings" in x
                                                        for x in labels), labels
    p.run().wait_until_finish()
    out.mkdir()
    (out / "predictions-r-00000-of-00001.jsonl").write_text("")
    assert any_predictions([str(out)]) is True

    def broken(*args, **kwargs):
        raise OSError("403 Forbidden")

    monkeypatch.setattr(FileSystems, "match", broken)
    assert any_predictions([str(tmp_path / "elsewhere")]) is True


def test_write_jsonl_roundtrip(tmp_path):
    rows = [{"uri": f"u{i}", "stage": "decode", "error_type": "X", "message": "m"}
            for i in range(3)]
    with TestPipeline() as p:
        _ = p | beam.Create(rows) | WriteDeadLetters(str(tmp_path), "r1")
    got = sorted(read_jsonl(str(tmp_path / "errors-*.jsonl")), key=lambda r: r["uri"])
    assert got == rows


def test_a_listed_file_gone_when_read_is_a_not_found_dead_letter(tmp_path):
    from transforms.io import ReadBytes
    from transforms.records import Item

    gone = str(tmp_path / "gone.jpg")
    (out,) = list(ReadBytes(DecodeLimits()).process(Item(gone, None)))
    record = out.value
    assert out.tag == DEAD_LETTER
    assert (record["uri"], record["stage"], record["error_type"]) == (gone, "read", "NotFound")
    assert record["message"].startswith(f"{gone}: not there when read")
