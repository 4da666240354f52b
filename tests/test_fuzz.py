"""2,000 mutated files across JPEG, PNG, GIF, WebP, TIFF and BMP (tests/fuzz_images.py).

Each is decoded and preprocessed in a child under a 3 GB address-space cap, with a
wall-time budget per image; then the whole set runs through the pipeline, where every
file must be scored or dead-lettered exactly once. scripts/fuzz_decode.py runs more.
"""

from __future__ import annotations

import collections
import json

import pytest

from pipeline.main import run
from tests.fuzz_images import MUTATIONS, decode_in_child, seeds, write_corpus

pytestmark = pytest.mark.slow

COUNT = 2000
PER_IMAGE_BUDGET_S = 2.0
PEAK_RSS_BUDGET_MB = 1024


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("fuzz"), COUNT, seed=0)


@pytest.fixture(scope="module")
def child_records(fuzzed):
    return decode_in_child(fuzzed, timeout_s=300)


def test_every_seed_is_valid_before_mutation():
    from transforms.decode import decode_image

    for name, data in seeds().items():
        assert decode_image(data).shape[2] == 3, name


def test_mutated_files_decode_or_fail_cleanly_within_budget(child_records):
    records = child_records
    assert len(records) == COUNT                       # the child survived every file
    outcomes = collections.Counter(r["outcome"] for r in records)
    print("\nfuzz outcomes", json.dumps(dict(outcomes)),
          "max_s=%.3f" % max(r["seconds"] for r in records),
          "peak_rss_mb=%.0f" % max(r["peak_rss_mb"] for r in records))
    allowed = {"ok", "UndecodableImage", "ImageTooLarge", "UnsupportedFormat",
               "UnsupportedMode", "PreprocessError"}
    assert set(outcomes) <= allowed, outcomes
    assert outcomes["ok"] > 0 and outcomes["UndecodableImage"] > 0
    slow = [r for r in records if r["seconds"] > PER_IMAGE_BUDGET_S]
    assert slow == []
    assert max(r["peak_rss_mb"] for r in records) < PEAK_RSS_BUDGET_MB


def test_mutated_files_through_the_pipeline_exactly_once(fuzzed, child_records, tmp_path):
    folder = fuzzed[0].parent
    summary = run(["--input", f"{folder}/*", "--output", str(tmp_path),
                   "--max_failed_fraction", "1"])
    preds, errors = [], []
    for f in tmp_path.glob("predictions-*"):
        preds += [json.loads(line)["uri"] for line in f.read_text().splitlines() if line]
    for f in tmp_path.glob("errors-*"):
        errors += [json.loads(line) for line in f.read_text().splitlines() if line]
    seen = preds + [e["uri"] for e in errors]
    print("\nreliability-row fuzz", json.dumps(
        {"images": COUNT, "predicted": len(preds), "dead_lettered": len(errors),
         "lost": COUNT - len(set(seen)), "duplicated": len(seen) - len(set(seen))}))
    assert sorted(seen) == sorted(str(p) for p in fuzzed)
    assert {e["stage"] for e in errors} <= {"decode", "preprocess"}
    assert all(e["error_type"] and e["message"] for e in errors)
    assert summary.ok == len(preds) and summary.failed == len(errors)
    # The pipeline scores exactly the files the plain decode + preprocess accepts.
    ok = {r["file"] for r in child_records if r["outcome"] == "ok"}
    assert {p.rsplit("/", 1)[-1] for p in preds} == ok
    assert {m for m in MUTATIONS for p in preds if p.endswith(m)} == set(MUTATIONS)
