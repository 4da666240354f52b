"""Scheduled, incremental runs: only new images are scored, and re-running to the same
prefix never duplicates a record (against the real GCS emulator)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter

import pytest

from pipeline.main import run
from tests.conftest import SAMPLES, sample_paths

pytestmark = pytest.mark.slow


def _predictions(bucket, prefix: str) -> list:
    out = []
    for blob in bucket.list_blobs(prefix=prefix + "/predictions-"):
        out += [json.loads(line)["uri"] for line in blob.download_as_bytes().decode()
                .splitlines() if line.strip()]
    return out


def test_second_run_scores_exactly_the_new_images(gcs_client):
    bucket = gcs_client.bucket("bucket")
    base = f"inc-{uuid.uuid4().hex[:8]}"
    paths = sample_paths()
    for p in paths[:5]:
        bucket.blob(f"{base}/images/{p.name}").upload_from_string(p.read_bytes())
    args = ["--input", f"gs://bucket/{base}/images/*", "--output", f"gs://bucket/{base}/out"]
    first = run(args)
    assert (first.ok, first.skipped) == (5, 0)
    for p in paths[5:]:
        bucket.blob(f"{base}/images/{p.name}").upload_from_string(p.read_bytes())
    second = run(args)
    assert (second.ok, second.failed, second.skipped) == (5, 0, 5)
    third = run(args)  # nothing new: nothing scored, nothing written twice
    assert (third.ok, third.skipped) == (0, 10)
    counts = Counter(_predictions(bucket, f"{base}/out"))
    assert len(counts) == 10 and set(counts.values()) == {1}


def test_skip_scored_reads_another_runs_jsonl_and_parquet(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in sample_paths()[:4]:
        shutil.copy(p, images / p.name)
    earlier = tmp_path / "earlier"
    run(["--input", str(images / "*"), "--output", str(earlier), "--output_format", "parquet"])
    shutil.copy(SAMPLES / "rocket.jpg", images / "new.jpg")
    later = run(["--input", str(images / "*"), "--output", str(tmp_path / "later"),
                 "--skip_scored", str(earlier)])
    assert (later.ok, later.skipped) == (1, 4)
