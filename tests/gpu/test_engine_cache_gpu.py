"""The engine cache with real TensorRT: build on a miss, publish to GCS (the emulator),
reload on the next worker, and run."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tests.conftest import make_linear_model

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt]


def test_build_upload_reload_and_run(trt, gcs_client, tmp_path, report):
    from tests.test_trt_runner import TensorRTEngineHandler

    onnx_path = tmp_path / "tiny.onnx"
    w = make_linear_model(onnx_path, hw=(8, 8), classes=3, seed=7)
    bucket = gcs_client.bucket("bucket")
    name = f"models/{uuid.uuid4().hex}.onnx"
    bucket.blob(name).upload_from_string(onnx_path.read_bytes())
    root = f"gs://bucket/engines-{uuid.uuid4().hex[:8]}"

    def handler() -> TensorRTEngineHandler:
        return TensorRTEngineHandler(engine_cache=root, onnx_uri=f"gs://bucket/{name}",
                                     precision="tf32", profile=(1, 4, 8), optimization_level=0,
                                     example_shape=(8, 8, 3))

    rng = np.random.default_rng(1)
    batch = [rng.standard_normal((8, 8, 3)).astype(np.float32) for _ in range(11)]
    want = np.stack(batch).astype(np.float64).mean(axis=(1, 2)) @ w.astype(np.float64)
    uris = []
    for _ in range(2):  # the first worker builds and publishes, the second reloads
        h = handler()
        engine = h.load_model()
        try:
            got = np.stack([r.inference for r in h.run_inference(batch, engine)])
            np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-4)
            assert engine.info().max_batch == 8
        finally:
            engine.close()
        uris.append(sorted(b.name for b in bucket.list_blobs(prefix=root[len("gs://bucket/"):])))
    assert len(uris[0]) == 2 and uris[0] == uris[1]  # one plan + sidecar, reused
    assert uris[0][0].endswith(".plan") and "/tf32-b1-4-8/" in uris[0][0]
    report["engine_cache_objects"] = uris[0]
