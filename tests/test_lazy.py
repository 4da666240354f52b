"""LazyRunner: the model loads on the first batch, once; never when no batch comes."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import List, Tuple

import apache_beam as beam
import numpy as np
import pytest
from PIL import Image

from pipeline.build import SystemicFailure, build_pipeline, make_handler
from pipeline.config import RunConfig
from tests.conftest import make_linear_model
from tests.test_build import SPEC, StandInLoader, _jpeg
from transforms.handlers.model_handler import NumpyModelHandler
from transforms.runtime.errors import ModelLoadError
from transforms.runtime.lazy import LazyRunner
from transforms.runtime.onnx import OnnxLoader

LOADS: List[str] = []


@dataclass(frozen=True)
class CountingLoader:
    """An ONNX loader that notes each load (in-process runs share this module's list)."""

    model_uri: str
    fail: bool = False
    backend = "onnx"

    def __call__(self):
        LOADS.append(self.model_uri)
        if self.fail:
            raise ModelLoadError(f"{self.model_uri}: expected an engine for this GPU, got "
                                 f"one built for another")
        time.sleep(0.05)
        return OnnxLoader(self.model_uri)()

    def batch_bounds(self) -> Tuple[int, int]:
        return 1, 4


@pytest.fixture
def model(tmp_path):
    LOADS.clear()
    path = tmp_path / "tiny.onnx"
    make_linear_model(path, hw=(8, 8))
    return str(path)


def test_loads_once_on_first_use_from_many_threads(model):
    lazy = LazyRunner(CountingLoader(model))
    assert not lazy.loaded and LOADS == []
    x = np.zeros((2, 8, 8, 3), np.float32)
    threads = [threading.Thread(target=lambda: lazy.infer({"images": x})) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert LOADS == [model] and lazy.loaded
    assert lazy.info().model_uri == model and lazy.next_batch_id() != lazy.next_batch_id()
    lazy.close()
    assert not lazy.loaded
    LazyRunner(CountingLoader(model)).close()            # closing an unloaded one loads nothing
    assert LOADS == [model]


def test_a_failed_load_is_systemic_and_names_the_cause(model):
    lazy = LazyRunner(CountingLoader(model, fail=True))
    with pytest.raises(ModelLoadError, match="built for another"):
        lazy.info()

    def boom():
        raise OSError("no such file: m.plan")
    with pytest.raises(ModelLoadError, match="on first use failed: OSError: no such file"):
        LazyRunner(boom).info()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(buf, "PNG")
    return buf.getvalue()


def _gpu_run(tmp_path, model, files, pillow_loader):
    images = tmp_path / "images"
    images.mkdir(parents=True)
    for name, data in files.items():
        (images / name).write_bytes(data)
    cfg = RunConfig(output=str(tmp_path / "out"), inputs=(str(images / "*"),), spec=SPEC,
                    backend="tensorrt", engine="unused.plan", preprocess="gpu", run_id="t")
    p = beam.Pipeline()
    build_pipeline(p, cfg, handler=NumpyModelHandler(pillow_loader, lazy=True),
                   gpu_handler=NumpyModelHandler(StandInLoader(model)))
    p.run().wait_until_finish()


def test_the_pillow_side_model_is_never_loaded_when_every_file_is_a_jpeg(tmp_path, model):
    _gpu_run(tmp_path, model, {f"{i}.jpg": _jpeg((20 * i, 90, 200)) for i in range(5)},
             CountingLoader(model))
    assert LOADS == []
    _gpu_run(tmp_path / "again", model, {"a.jpg": _jpeg((1, 2, 3)), "b.png": _png()},
             CountingLoader(model))
    assert LOADS == [model]                                # one PNG: loaded, once


def test_a_lazy_model_that_cannot_load_fails_the_run_not_the_images(tmp_path, model):
    with pytest.raises(Exception, match="built for another") as info:
        _gpu_run(tmp_path, model, {"a.jpg": _jpeg((1, 2, 3)), "b.png": _png()},
                 CountingLoader(model, fail=True))
    assert "SystemicFailure" in repr(info.value) or isinstance(info.value, SystemicFailure)


def test_make_handler_is_lazy_only_for_the_gpu_paths_pillow_side(tmp_path):
    for pre, lazy in (("gpu", True), ("cpu", False)):
        cfg = RunConfig(output=str(tmp_path), inputs=("x/*",), spec=SPEC, backend="tensorrt",
                        engine="unused.plan", preprocess=pre)
        assert make_handler(cfg)._lazy is lazy


def test_a_lazy_runner_served_to_processes_by_model_copies_scores(model):
    """model_copies: Beam serves the LazyRunner from a MultiProcessShared process; the
    proxy reaches it through its methods, and the model loads there on the first batch."""
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.testing.util import assert_that, equal_to

    rng = np.random.default_rng(3)
    batch = [rng.standard_normal((8, 8, 3)).astype(np.float32) for _ in range(6)]
    direct = OnnxLoader(model)().infer({"images": np.stack(batch)})
    want = [int(i) for i in np.argmax(next(iter(direct.values())), axis=1)]
    handler = NumpyModelHandler(OnnxLoader(model), model_copies=1, lazy=True,
                                max_batch_size=4)
    p = beam.Pipeline()
    got = (p | beam.Create(batch) | RunInference(handler)
           | beam.Map(lambda r: int(np.argmax(r.inference))))
    assert_that(got, equal_to(want))
    p.run().wait_until_finish()
