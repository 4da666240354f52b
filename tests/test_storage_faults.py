"""Storage faults against the real GCS emulator behind a fault-injecting proxy.

What is under test is the retry machinery the pipeline relies on, unchanged: Beam's
GcsIO reads through google-cloud-storage, whose DEFAULT_RETRY retries 429, 5xx,
connection resets and timeouts with exponential backoff (transforms/read_images.py says so at
ReadBytes). Every image must end scored exactly once, or dead-lettered with a reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from pipeline.main import run
from tests.conftest import SAMPLES
from tests.fault_proxy import FaultPlan, FaultProxy, faults_summary

pytestmark = pytest.mark.slow


def _upload_samples(bucket, prefix: str, copies: int) -> List[str]:
    uris = []
    images = sorted(SAMPLES.glob("*.jpg")) + sorted(SAMPLES.glob("*.png"))
    for i in range(copies):
        for p in images:
            name = f"{prefix}/{i:02d}_{p.name}"
            bucket.blob(name).upload_from_string(p.read_bytes())
            uris.append(f"gs://{bucket.name}/{name}")
    return uris


def _outputs(out: Path) -> Tuple[List[str], List[Dict]]:
    preds, errors = [], []
    for f in out.glob("predictions-*"):
        preds += [json.loads(line)["uri"] for line in f.read_text().splitlines() if line]
    for f in out.glob("errors-*"):
        errors += [json.loads(line) for line in f.read_text().splitlines() if line]
    return preds, errors


def _run_through(proxy: FaultProxy, argv: List[str]):
    """The run with STORAGE_EMULATOR_HOST pointing at the proxy, restored afterwards."""
    old = os.environ["STORAGE_EMULATOR_HOST"]
    with proxy as url:
        os.environ["STORAGE_EMULATOR_HOST"] = url
        try:
            return run(argv)
        finally:
            os.environ["STORAGE_EMULATOR_HOST"] = old


def test_429s_503s_resets_and_stalls_on_reads_are_retried(gcs_emulator, gcs_client, tmp_path):
    uris = _upload_samples(gcs_client.bucket("bucket"), "faults", copies=2)
    plan = FaultPlan(fraction=0.2, seed=7, stall_s=2.0)
    summary = _run_through(FaultProxy(gcs_emulator, plan),
                           ["--input", "gs://bucket/faults/*", "--output", str(tmp_path)])
    preds, errors = _outputs(tmp_path)
    print("\nreliability-row storage-faults", json.dumps(
        {"images": len(uris), "predicted": len(preds), "dead_lettered": len(errors),
         "lost": len(set(uris) - set(preds) - {e["uri"] for e in errors}),
         "duplicated": len(preds) - len(set(preds)), **faults_summary(plan)}))
    assert all(plan.injected[k] > 0 for k in ("429", "503", "reset", "stall")), plan.injected
    assert errors == []
    assert sorted(preds) == sorted(uris)          # each exactly once
    assert summary.ok == len(uris) and summary.failed == 0


def test_file_deleted_between_listing_and_reading_is_a_read_dead_letter(
        gcs_emulator, gcs_client, tmp_path):
    uris = _upload_samples(gcs_client.bucket("bucket"), "vanish", copies=1)
    gone = uris[3]
    plan = FaultPlan(vanish=frozenset({gone[len("gs://"):]}))
    summary = _run_through(FaultProxy(gcs_emulator, plan),
                           ["--input", "gs://bucket/vanish/*", "--output", str(tmp_path),
                            "--max_failed_fraction", "1"])
    preds, errors = _outputs(tmp_path)
    print("\nreliability-row vanished", json.dumps(
        {"images": len(uris), "predicted": len(preds), "dead_lettered": len(errors),
         "lost": len(set(uris) - set(preds) - {e["uri"] for e in errors}),
         "duplicated": len(preds) - len(set(preds))}))
    assert sorted(preds) == sorted(set(uris) - {gone})
    assert [(e["uri"], e["stage"], e["error_type"]) for e in errors] == [
        (gone, "read", "NotFound")]
    assert gone in errors[0]["message"]
    assert summary.ok == len(uris) - 1 and summary.failed == 1
