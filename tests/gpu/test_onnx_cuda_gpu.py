"""onnxruntime-gpu's CUDA EP on a real GPU: same results as the CPU EP, in the handler and
in the whole pipeline. Run under ../shared/gpu/pack (python3 3.12)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SAMPLES, make_linear_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_ep(gpu):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime-gpu is not installed here "
                                                   "(the TensorRT harness); run under pack")

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                    f"({ort.get_available_providers()}); install onnxruntime-gpu")


def test_cuda_ep_matches_cpu(cuda_ep, tmp_path):
    from tests.test_onnx_runner import OnnxModelHandler

    path = tmp_path / "tiny.onnx"
    make_linear_model(path, hw=(8, 8), classes=4)
    rng = np.random.default_rng(0)
    batch = [rng.standard_normal((8, 8, 3)).astype(np.float32) for _ in range(9)]
    outs = {}
    for name, providers in (("cpu", ["CPUExecutionProvider"]),
                            ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])):
        # use_tf32=0: the CUDA EP's default TF32 math differs from CPU fp32 by ~2e-3 relative
        h = OnnxModelHandler(str(path), providers=providers,
                             provider_options=(("CUDAExecutionProvider", (("use_tf32", "0"),)),))
        model = h.load_model()
        assert model.info().details["providers"].split(",")[0] == providers[0]
        outs[name] = np.stack([r.inference for r in h.run_inference(batch, model)])
    np.testing.assert_allclose(outs["cuda"], outs["cpu"], rtol=1e-4, atol=1e-5)


def test_pipeline_on_cuda_ep_matches_cpu(cuda_ep, tmp_path):
    from pipeline.main import run
    from transforms.io import read_jsonl

    common = ["--input", str(SAMPLES / "*.jpg"), "--input", str(SAMPLES / "*.png")]
    s_gpu = run(common + ["--output", str(tmp_path / "gpu"), "--onnx_providers",
                          "CUDAExecutionProvider,CPUExecutionProvider"])
    s_cpu = run(common + ["--output", str(tmp_path / "cpu")])
    assert s_gpu.ok == s_cpu.ok == 10
    scores = {}
    for name in ("gpu", "cpu"):
        for p in read_jsonl(str(tmp_path / name / "predictions-*.jsonl")):
            scores.setdefault(p["uri"], {})[name] = {t["label"]: t["score"] for t in p["top_k"]}
    for uri, s in scores.items():
        assert abs(s["gpu"]["nsfw"] - s["cpu"]["nsfw"]) <= 1e-3, (uri, s)
