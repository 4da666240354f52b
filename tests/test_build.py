"""The --preprocess gpu graph, wired end to end on the CPU.

DALI and TensorRT need a GPU, so a stand-in runner takes their place: it takes the same
encoded files, decodes them with the CPU path's own code, runs a real ONNX model, and
reports GPU_OK False for files marked to fail, exactly as the DALI runner does for a file
it cannot decode alone. What is tested is the graph: routing, the fallback to the Pillow
path, one prediction per image, and the path each prediction names.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import apache_beam as beam
import numpy as np
from PIL import Image

from pipeline.build import build_pipeline
from pipeline.config import RunConfig
from tests.conftest import make_linear_model
from tests.images import truncated_jpeg
from transforms.decode import decode_image
from transforms.handlers.model_handler import NumpyModelHandler
from transforms.io import read_jsonl
from transforms.preprocess import preprocess
from transforms.runtime.onnx import OnnxLoader
from transforms.runtime.runner import Feeds, Runner, RunnerInfo, TensorInfo
from transforms.runtime.tensorrt.gpu_runner import ENCODED, GPU_OK
from transforms.spec import ModelSpec

SPEC = ModelSpec(name="tiny", height=8, width=8, layout="NHWC", input_name="images",
                 resize_policy="exact", crop="none", scale=1 / 255, mean=(0.5, 0.5, 0.5),
                 std=(0.25, 0.25, 0.25), labels=("a", "b", "c"))
FAIL_MARK = b"FAIL-ON-GPU"


class StandInGpuRunner(Runner):
    def __init__(self, model_uri: str) -> None:
        super().__init__()
        self._onnx = OnnxLoader(model_uri)()
        base = self._onnx.info()
        self._info = RunnerInfo("tensorrt", model_uri, base.sha256, "cpu",
                                (TensorInfo(ENCODED, "encoded", ()),), base.outputs + (GPU_OK,),
                                1, 4, 4)

    def info(self) -> RunnerInfo:
        return self._info

    def infer(self, feeds: Feeds) -> Feeds:
        files = [bytes(f) for f in feeds[ENCODED]]
        ok = np.array([FAIL_MARK not in f for f in files])
        x = np.stack([preprocess(decode_image(f), SPEC) for f in files])
        out = self._onnx.infer({"images": x})
        out[GPU_OK] = ok
        return out


@dataclass(frozen=True)
class StandInLoader:
    model_uri: str
    backend = "tensorrt"

    def __call__(self) -> StandInGpuRunner:
        return StandInGpuRunner(self.model_uri)

    def batch_bounds(self) -> Tuple[int, int]:
        return 1, 4


def _jpeg(color, comment: bytes = b"") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    if comment:   # a COM segment right after SOI: still a whole, valid JPEG
        data = data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]
    return data


def test_gpu_graph_routes_falls_back_and_scores_each_image_once(tmp_path):
    model = tmp_path / "tiny.onnx"
    make_linear_model(model, hw=(8, 8))
    images = tmp_path / "images"
    images.mkdir()
    files = {f"gpu-{i}.jpg": _jpeg((30 * i, 90, 200)) for i in range(7)}
    files["fallback.jpg"] = _jpeg((10, 200, 10), FAIL_MARK)
    buf = io.BytesIO()
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(buf, "PNG")
    files["alpha.png"] = buf.getvalue()
    files["cut.jpg"] = truncated_jpeg()
    for name, data in files.items():
        (images / name).write_bytes(data)
    cfg = RunConfig(output=str(tmp_path / "out"), inputs=(str(images / "*"),), spec=SPEC,
                    backend="tensorrt", engine="unused.plan", preprocess="gpu", run_id="t")
    p = beam.Pipeline()
    build_pipeline(p, cfg, handler=NumpyModelHandler(OnnxLoader(str(model))),
                   gpu_handler=NumpyModelHandler(StandInLoader(str(model))))
    result = p.run()
    result.wait_until_finish()
    preds = {Path(r["uri"]).name: r for r in read_jsonl(str(tmp_path / "out" /
                                                            "predictions-*.jsonl"))}
    # the balance the launcher checks, and the stage counts it prints when it fails:
    # the Pillow path receives what the route sent it plus what DALI handed back
    from pipeline.main import stage_counters

    c = stage_counters(result)
    assert c["images_admitted"] == c["images_ok"] + c["images_failed"] == 10
    assert c["images_pillow_in"] == c["images_cpu_path"] + c["images_gpu_fallback"] == 2
    errors = {Path(r["uri"]).name: r for r in read_jsonl(str(tmp_path / "out" /
                                                             "errors-*.jsonl"))}
    assert sorted(preds) == sorted(n for n in files if n != "cut.jpg")
    assert {n: r["preprocess"] for n, r in preds.items()} == dict(
        {f"gpu-{i}.jpg": "gpu" for i in range(7)}, **{"fallback.jpg": "cpu", "alpha.png": "cpu"})
    assert list(errors) == ["cut.jpg"] and errors["cut.jpg"]["stage"] == "decode"
    # the two paths score the same file alike (the stand-in decodes with the CPU code)
    assert all(len(r["top_k"]) == 3 for r in preds.values())
    bundles = list(read_jsonl(str(tmp_path / "out" / "bundles-*.jsonl")))
    assert sum(b["images_gpu_preprocess"] for b in bundles) == 7
    assert sum(b["images_cpu_preprocess"] for b in bundles) == 2
    json.dumps(bundles)
