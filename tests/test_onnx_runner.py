"""The ONNX Runtime loader and runner under the generic handler, on real ONNX models built
with onnx.helper (CPU execution provider)."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import make_linear_model
from transforms.handlers.model_handler import NumpyModelHandler
from transforms.runtime.errors import InputMismatch, ItemFailure, ModelLoadError
from transforms.runtime.onnx import OnnxLoader


def OnnxModelHandler(uri, *, min_batch_size=None, max_batch_size=None, model_copies=None,
                     **loader):
    """The generic handler over an OnnxLoader (what pipeline.build.make_handler builds)."""
    return NumpyModelHandler(OnnxLoader(uri, **loader), min_batch_size=min_batch_size,
                             max_batch_size=max_batch_size, model_copies=model_copies)


def _expected(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x.astype(np.float64).mean(axis=(1, 2)) @ w.astype(np.float64)


def _batch(n: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((8, 8, 3)).astype(np.float32) for _ in range(n)]


def test_outputs_ordered_exact_and_owned(tiny_model):
    path, w = tiny_model
    handler = OnnxModelHandler(str(path), example_shape=(8, 8, 3), input_dtype="float32")
    model = handler.load_model()
    batch = _batch(5)
    results, facts = handler.run_batch(batch, model)
    assert len(results) == 5
    expected = _expected(np.stack(batch), w)
    for i, r in enumerate(results):
        out = r.inference                 # one output: the array itself
        assert isinstance(out, np.ndarray) and out.shape == (3,)
        np.testing.assert_allclose(out, expected[i], rtol=1e-5, atol=1e-5)
        assert out.flags["OWNDATA"]
        assert r.model_id == str(path)   # the model's URI, as Beam's handlers report it
    info = model.info()
    assert facts.size == 5 and facts.ms > 0 and facts.model_sha256 == info.sha256
    assert len(info.sha256) == 64 and facts.batch_id
    results[0].inference[:] = 0  # a caller's write touches nothing else
    np.testing.assert_allclose(results[1].inference, expected[1], rtol=1e-5)


def test_fixed_batch_model_is_chunked_and_padded(tmp_path):
    path = tmp_path / "fixed4.onnx"
    w = make_linear_model(path, batch=4)
    handler = OnnxModelHandler(str(path))
    model = handler.load_model()
    assert (model.info().min_batch, model.info().max_batch) == (4, 4)
    batch = _batch(6, seed=3)
    results = list(handler.run_inference(batch, model))
    got = np.stack([r.inference for r in results])
    np.testing.assert_allclose(got, _expected(np.stack(batch), w), rtol=1e-5, atol=1e-5)


def test_wrong_input_name(tiny_model):
    path, _ = tiny_model
    handler = OnnxModelHandler(str(path), input_name="input_1")
    with pytest.raises(InputMismatch,
                       match=r"tiny.onnx: expected an input named 'input_1', the model has \['images'\]"):
        handler.load_model()


def test_wrong_layout_shape(tiny_model):
    path, _ = tiny_model
    handler = OnnxModelHandler(str(path), example_shape=(3, 8, 8))
    with pytest.raises(InputMismatch, match=r"expected shape \[\?, 3, 8, 8\], the model declares \[\?, 8, 8, 3\]"):
        handler.load_model()


def test_wrong_dtype(tmp_path):
    path = tmp_path / "f.onnx"
    make_linear_model(path)
    handler = OnnxModelHandler(str(path), input_dtype="uint8")
    with pytest.raises(InputMismatch, match=r"expected dtype uint8, the model declares tensor\(float\)"):
        handler.load_model()


def test_bad_example_in_batch(tiny_model):
    path, _ = tiny_model
    handler = OnnxModelHandler(str(path))
    model = handler.load_model()
    # the bad example fails alone (split and retry); the good one is scored
    good, bad = handler.run_inference([np.zeros((8, 8, 3), np.float32),
                                       np.zeros((8, 8), np.float32)], model)
    assert isinstance(good.inference, np.ndarray)
    assert bad.inference == ItemFailure("InputMismatch", "input 'images' example 0: expected "
                                                         "shape [8, 8, 3], got [8, 8]")
    (only,) = handler.run_inference([np.zeros((8, 8, 3))], model)
    assert only.inference.error_type == "InputMismatch"
    assert "example 0: expected dtype float32, got float64" in only.inference.message


def test_missing_model_file(tmp_path):
    handler = OnnxModelHandler(str(tmp_path / "nope.onnx"))
    with pytest.raises(ModelLoadError, match="nope.onnx: cannot read model"):
        handler.load_model()


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelLoadError, match="junk.onnx: onnxruntime cannot load the model"):
        OnnxModelHandler(str(path)).load_model()


def test_unavailable_provider_fails_fast(tiny_model):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP; the check needs a CPU-only build")
    handler = OnnxModelHandler(str(tiny_model[0]),
                               providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    with pytest.raises(ModelLoadError, match=r"expected \['CUDAExecutionProvider'\] to be available.*beam-trt-inference\[gpu\]"):
        handler.load_model()


def test_handler_surface(tiny_model):
    handler = OnnxModelHandler(str(tiny_model[0]), min_batch_size=2, max_batch_size=16,
                               model_copies=1)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 2, "max_batch_size": 16}
    assert OnnxModelHandler("x").batch_elements_kwargs() == {"min_batch_size": 1,
                                                             "max_batch_size": 32}
    assert handler.share_model_across_processes() and handler.model_copies() == 1
    assert not OnnxModelHandler("x").share_model_across_processes()
    batch = _batch(3)
    assert handler.get_num_bytes(batch) == 3 * 8 * 8 * 3 * 4
    assert handler.get_metrics_namespace() == "beam_trt_inference_onnx"


def test_in_run_inference_keyed(tiny_model):
    path, w = tiny_model
    batch = _batch(7, seed=9)
    expected = _expected(np.stack(batch), w)
    want = [(f"k{i}", int(np.argmax(expected[i]))) for i in range(7)]
    handler = KeyedModelHandler(OnnxModelHandler(str(path), max_batch_size=4))
    p = TestPipeline()
    got = (p | beam.Create([(f"k{i}", x) for i, x in enumerate(batch)])
           | RunInference(handler)
           | beam.MapTuple(lambda k, r: (k, int(np.argmax(r.inference)))))
    assert_that(got, equal_to(want))
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(
        MetricsFilter().with_namespace("beam_trt_inference_onnx").with_name("num_inferences"))
    assert sum(c.result for c in counters["counters"]) == 7
    # batch latency and size come from RunInference's own metrics, not ours
    dists = {d.key.metric.name: d.result for d in result.metrics().query(
        MetricsFilter().with_namespace("beam_trt_inference_onnx"))["distributions"]}
    assert dists["inference_request_batch_size"].sum == 7
    assert dists["inference_request_batch_size"].max <= 4
    assert dists["inference_batch_latency_micro_secs"].count >= 2


CUDA_EP, TRT_EP = "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.fixture
def two_gpus(monkeypatch, tmp_path):
    """Placement over two GPUs named by CUDA_VISIBLE_DEVICES (how they are counted where
    cuda-python is absent, as here), with a fresh round-robin counter and process state."""
    import transforms.runtime.placement as placement

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(placement, "COUNTER_FILE", str(tmp_path / "rr"))
    monkeypatch.setattr(placement, "_confined", None)
    monkeypatch.setattr(placement, "cuda_started", lambda: False)
    monkeypatch.setattr("transforms.runtime.cuda.cuda_python_available", lambda: False)
    return placement


def test_gpu_sessions_take_the_workers_gpus_in_turn(two_gpus):
    """ONNX Runtime's GPU providers get the placed device_id, so a two-GPU worker's
    sessions use both GPUs (before, every session ran on GPU 0)."""
    loader = OnnxLoader("m.onnx", providers=(TRT_EP, CUDA_EP, "CPUExecutionProvider"))
    got = [loader.placed_options() for _ in range(3)]
    assert [label for _, label in got] == ["cuda:0", "cuda:1", "cuda:0"]
    assert [(o[TRT_EP]["device_id"], o[CUDA_EP]["device_id"]) for o, _ in got] == \
        [("0", "0"), ("1", "1"), ("0", "0")]
    assert "CPUExecutionProvider" not in got[0][0]


def test_a_set_device_id_is_kept_and_the_cpu_provider_is_not_placed(two_gpus):
    pinned = OnnxLoader("m.onnx", providers=(CUDA_EP,),
                        provider_options=((CUDA_EP, (("device_id", "1"),)),))
    assert pinned.placed_options() == ({CUDA_EP: {"device_id": "1"}}, "cuda:1")
    assert OnnxLoader("m.onnx").placed_options() == ({}, "cpu")
    # neither consumed a round-robin slot: the next placed session takes GPU 0
    assert OnnxLoader("m.onnx", providers=(CUDA_EP,)).placed_options()[1] == "cuda:0"


def test_an_sdk_process_session_is_narrowed_to_its_gpu(two_gpus, monkeypatch):
    import os

    monkeypatch.setenv(two_gpus.SDK_PROCESS_MARK, "url: 'localhost:1'")
    OnnxLoader("m.onnx", providers=(CUDA_EP,)).placed_options()    # another process's slot
    two_gpus._confined = None                                      # this process
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    options, label = OnnxLoader("m.onnx", providers=(CUDA_EP,)).placed_options()
    assert (options[CUDA_EP]["device_id"], label) == ("0", "cuda:1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
