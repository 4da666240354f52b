"""GPU fixtures: skip with a reason when TensorRT, cuda-python or a GPU is missing; build
engines once per session into TRT_ENGINE_DIR (reused by later runs on the same machine)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import make_linear_model


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory) -> Path:
    d = os.environ.get("TRT_ENGINE_DIR")
    path = Path(d) if d else tmp_path_factory.mktemp("engines")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def report(engine_dir):
    """Figures the GPU tests measure, appended to $REPORT_DIR/gpu_report.json if set."""
    figures = {}
    yield figures
    out = os.environ.get("REPORT_DIR")
    if out and figures:
        Path(out).mkdir(parents=True, exist_ok=True)
        with open(Path(out) / "gpu_report.json", "w") as f:
            json.dump(figures, f, indent=2)


def build_cached(trt, onnx_path: Path, plan: Path, engine_dir: Path, **kw):
    """Build unless a plan for the same ONNX, precision and profile already sits there."""
    from pipeline.build_engine import build_to_files
    from transforms.runtime.tensorrt.builder import BuildOptions
    from transforms.runtime.storage import sha256_hex
    from transforms.runtime.tensorrt.sidecar import Sidecar

    opts = BuildOptions(onnx=str(onnx_path), output=str(plan),
                        timing_cache=str(engine_dir / "timing.cache"),
                        builder_optimization_level=int(os.environ.get("TRT_OPT_LEVEL", "1")),
                        **kw)
    side = Path(str(plan) + ".json")
    if plan.exists() and side.exists():
        s = Sidecar.from_json(side.read_text())
        if (s.onnx_sha256 == sha256_hex(onnx_path.read_bytes()) and s.precision == opts.precision
                and s.tensorrt_version == trt.__version__
                and s.builder.get("max_batch") == opts.max_batch):
            return s
    return build_to_files(opts)


@pytest.fixture(scope="session")
def tiny_engine(trt, engine_dir):
    onnx_path = engine_dir / "tiny.onnx"
    w = make_linear_model(onnx_path, hw=(8, 8), classes=5, seed=4)
    plan = engine_dir / "tiny.plan"
    build_cached(trt, onnx_path, plan, engine_dir, min_batch=1, opt_batch=8, max_batch=32)
    return plan, w


@pytest.fixture(scope="session")
def nsfw_engines(trt, engine_dir):
    from transforms.runtime.storage import bundled_model_path

    onnx_path = Path(bundled_model_path("bundled://open_nsfw"))
    plans = {}
    for precision in ("fp32", "fp16"):
        plan = engine_dir / f"open_nsfw.{precision}.plan"
        build_cached(trt, onnx_path, plan, engine_dir, min_batch=1, opt_batch=16,
                     max_batch=32, fp16=precision == "fp16")
        plans[precision] = plan
    return plans


@pytest.fixture(scope="session")
def effnet(trt):
    path = os.environ.get("EFFNET_ONNX")
    if not path or not Path(path).exists():
        pytest.skip("set EFFNET_ONNX to the model from scripts/export_efficientnet.py "
                    "(needs torch, so it is exported on the GPU machine first)")
    ref = Path(path + ".ref.npz")
    if not ref.exists():
        pytest.skip(f"{ref} is missing; scripts/export_efficientnet.py writes it")
    return Path(path), ref
