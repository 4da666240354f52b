"""The pipeline against a real gcp-storage-emulator server: gs:// glob, gs:// manifest,
gs:// model, gs:// outputs."""

from __future__ import annotations

import json

import pytest

from pipeline.main import run
from tests.conftest import SAMPLES, make_linear_model

pytestmark = pytest.mark.slow


def _upload(bucket, name: str, data: bytes) -> str:
    bucket.blob(name).upload_from_string(data)
    return f"gs://{bucket.name}/{name}"


def _read_jsonl(bucket, prefix: str) -> list:
    out = []
    for blob in bucket.list_blobs(prefix=prefix):
        out += [json.loads(line) for line in blob.download_as_bytes().decode().splitlines()
                if line.strip()]
    return out


def test_pipeline_reads_and_writes_gcs(gcs_client, tmp_path):
    bucket = gcs_client.bucket("bucket")
    globbed = [_upload(bucket, f"images/{p.name}", p.read_bytes())
               for p in sorted(SAMPLES.glob("*.jpg"))[:3]]
    listed = [_upload(bucket, f"more/{p.name}", p.read_bytes())
              for p in sorted(SAMPLES.glob("*.png"))[:2]]
    missing = "gs://bucket/more/missing.jpg"
    manifest = _upload(bucket, "manifest.txt", "\n".join(listed + [missing]).encode())
    summary = run(["--input", "gs://bucket/images/*", "--input_list", manifest,
                   "--max_failed_fraction", "1",
                   "--output", "gs://bucket/out/"])
    assert summary.ok == 5 and summary.failed == 1
    preds = _read_jsonl(bucket, "out/predictions-")
    assert sorted(p["uri"] for p in preds) == sorted(globbed + listed)
    errors = _read_jsonl(bucket, "out/errors-")
    assert [(e["uri"], e["stage"]) for e in errors] == [(missing, "read")]
    assert sum(b["images"] for b in _read_jsonl(bucket, "out/bundles-")) == 5


def test_model_and_spec_from_gcs(gcs_client, tmp_path):
    bucket = gcs_client.bucket("bucket")
    local = tmp_path / "tiny.onnx"
    make_linear_model(local, hw=(8, 8), classes=2)
    model = _upload(bucket, "models/tiny.onnx", local.read_bytes())
    spec = _upload(bucket, "models/tiny.json", json.dumps(
        {"name": "tiny", "height": 8, "width": 8, "layout": "NHWC", "labels": ["x", "y"],
         "channel_order": "RGB", "scale": 1, "mean": [0, 0, 0], "std": [1, 1, 1]}
    ).encode())
    image = _upload(bucket, "single/coffee.jpg", (SAMPLES / "coffee.jpg").read_bytes())
    summary = run(["--input", image, "--model", model, "--model_spec", spec,
                   "--output", "gs://bucket/out-tiny"])
    assert summary.ok == 1
    (pred,) = _read_jsonl(bucket, "out-tiny/predictions-")
    assert pred["uri"] == image and pred["model_name"] == "tiny"
    assert {t["label"] for t in pred["top_k"]} == {"x", "y"}
