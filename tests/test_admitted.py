"""The URI side: hash buckets (stable, bounded), once-per-URI admission, the anti-join
against earlier predictions, and when the scored side is left out."""

from __future__ import annotations

import os
import subprocess
import sys

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.windowed_value import WindowedValue

from transforms import admitted
from transforms.admitted import AdmittedUris, _AdmitOnce, _ToBuckets, any_predictions, bucket_of


def test_bucket_is_the_same_in_every_process():
    """A URI's bucket must not depend on the process (str hash() is salted per process):
    workers that disagree would let a duplicate through."""
    uris = [f"gs://b/{i}.jpg" for i in range(50)] + ["gs://b/ünïcode.jpg"]
    code = ("import sys; sys.path.insert(0, %r); from transforms.admitted import bucket_of; "
            "print([bucket_of(u) for u in %r])") % (os.getcwd(), uris)
    for seed in ("1", "2"):
        got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
        assert got.strip() == str([bucket_of(u) for u in uris])
    assert len({bucket_of(u) for u in uris}) > 40
    assert all(0 <= bucket_of(u) < admitted.BUCKETS for u in uris)


def test_to_buckets_holds_at_most_flush_uris_and_loses_none(monkeypatch):
    monkeypatch.setattr(admitted, "FLUSH_URIS", 7)
    fn = _ToBuckets(True)
    fn.start_bundle()
    uris = [f"gs://b/{i}.jpg" for i in range(30)]
    out = []
    for i, uri in enumerate(uris):
        got = list(fn.process(uri))
        assert (len(got) > 0) == ((i + 1) % 7 == 0), i     # sent on every 7th URI
        out += got
    tail = list(fn.finish_bundle())
    assert all(isinstance(w, WindowedValue) for w in tail)
    out += [w.value for w in tail]
    assert sorted(u for _, (listed, us) in out for u in us) == sorted(uris)
    assert all(listed is True and all(bucket_of(u) == b for u in us)
               for b, (listed, us) in out)


def test_admit_once_dedups_and_skips_the_scored():
    listings = [(True, ["a", "b", "a"]), (False, ["b", "z"]), (True, ["c", "a"])]
    assert list(_AdmitOnce().process((3, listings))) == ["a", "c"]
    assert list(_AdmitOnce().process((4, [(False, ["x"])]))) == []


def test_many_uris_once_each_across_buckets(tmp_path):
    """5,000 listed URIs (a glob and a manifest overlapping, 500 listed twice) against an
    earlier run's predictions of 300 of them and of 20 never listed: each remaining URI
    once, and the counters say so."""
    import json

    from apache_beam.metrics.metric import MetricsFilter

    names = tmp_path / "imgs"
    names.mkdir()
    uris = [str(names / f"{i:05d}.jpg") for i in range(5000)]
    for u in uris[:2500]:
        open(u, "w").close()
    manifest = tmp_path / "m.txt"
    manifest.write_text("\n".join(uris[2000:] + uris[:250]) + "\n")   # 750 overlap the glob
    out = tmp_path / "out"
    out.mkdir()
    scored = uris[1000:1300]
    (out / "predictions-r0-00000-of-00001.jsonl").write_text("".join(
        json.dumps({"uri": u}) + "\n" for u in scored + [f"gs://gone/{i}" for i in range(20)]))
    p = TestPipeline()
    got = p | AdmittedUris((str(names / "*.jpg"),), str(manifest), (str(out),))
    assert_that(got, equal_to(sorted(set(uris) - set(scored))))
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed
                for c in result.metrics().query(MetricsFilter())["counters"]}
    assert counters["images_admitted"] == 4700 and counters["images_skipped"] == 300


def test_neither_glob_nor_manifest_is_refused():
    import pytest

    with pytest.raises(ValueError, match="at least one glob or a manifest"):
        AdmittedUris((), None)


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


def test_spread_reshuffles_the_admitted_uris_only_when_asked(tmp_path):
    """spread=True (the launcher's choice off Beam's local runner): the same URIs, behind
    a Reshuffle; the launcher asks for it by runner."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.build import build_pipeline
    from pipeline.config import RunConfig

    manifest = tmp_path / "m.txt"
    manifest.write_text("gs://b/1.jpg\ngs://b/2.jpg\ngs://b/1.jpg\n")
    p = TestPipeline()
    uris = p | AdmittedUris((), str(manifest), spread=True)
    assert_that(uris, equal_to(["gs://b/1.jpg", "gs://b/2.jpg"]))
    p.run().wait_until_finish()

    def labels(runner):
        q = beam.Pipeline(runner="DirectRunner", options=PipelineOptions(["--runner", runner]))
        build_pipeline(q, RunConfig(output=str(tmp_path / "o"), input_list=str(manifest)))
        return {t.unique_name for t in q.to_runner_api().components.transforms.values()}

    assert any(x.endswith("/SpreadUris") for x in labels("DataflowRunner"))
    assert not any("SpreadUris" in x for x in labels("DirectRunner"))
