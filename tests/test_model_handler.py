"""The one generic numpy handler: per-model state on the runner, the leftover rule, Beam's
handler contract, MultiProcessShared proxies, and systemic errors that fail the bundle.

A scripted runner stands in for TensorRT where the rule is backend-independent (a
profile of min 4 / max 8 behaves here exactly as an engine's); ONNX Runtime is real.
"""

from __future__ import annotations

import pickle
import uuid
from dataclasses import dataclass
from typing import Optional, Tuple

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.utils.multi_process_shared import MultiProcessShared

from pipeline.build import BatchFailures, exception_facts
from transforms.handlers.keyed import KeyedBatchHandler
from transforms.handlers.model_handler import NumpyModelHandler
from transforms.records import ItemKey
from transforms.runtime.cuda import CudaError
from transforms.runtime.errors import InputMismatch, ItemFailure, SharedModelError
from transforms.runtime.onnx import OnnxLoader
from transforms.runtime.runner import Feeds, Runner, RunnerInfo, TensorInfo
from transforms.runtime.storage import sha256_hex


class ScriptedRunner(Runner):
    """y = 2x over a profile (min_batch, max_batch); optionally raises a given error."""

    def __init__(self, min_batch: int, max_batch: int, error: Optional[BaseException]) -> None:
        super().__init__()
        self.calls = []
        self._error = error
        self._info = RunnerInfo("scripted", "mem://scripted", "f" * 64, "cpu",
                                (TensorInfo("x", "float32", (2,)),), ("y",),
                                min_batch, min_batch, max_batch)

    def info(self) -> RunnerInfo:
        return self._info

    def infer(self, feeds: Feeds) -> Feeds:
        rows = feeds["x"].shape[0]
        if not self._info.min_batch <= rows <= self._info.max_batch:
            raise InputMismatch(f"batch {rows} outside {self._info.min_batch}.."
                                f"{self._info.max_batch}")
        self.calls.append(rows)
        if self._error is not None:
            raise self._error
        return {"y": feeds["x"] * 2}


@dataclass(frozen=True)
class ScriptedLoader:
    min_batch: int = 4
    max_batch: int = 8
    error: Optional[BaseException] = None

    backend = "scripted"

    def __call__(self) -> ScriptedRunner:
        return ScriptedRunner(self.min_batch, self.max_batch, self.error)

    def batch_bounds(self) -> Tuple[int, int]:
        return self.min_batch, self.max_batch


def _examples(n: int) -> list:
    return [np.array([i, -i], np.float32) for i in range(n)]


def test_split_and_leftover_rule_like_an_engine_profile():
    """11 images on a profile 4..8: chunks of 8 and 3 padded to 4; results in order."""
    handler = NumpyModelHandler(ScriptedLoader(4, 8))
    runner = handler.load_model()
    results = list(handler.run_inference(_examples(11), runner))
    assert runner.calls == [8, 4]
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r.inference, [2 * i, -2 * i])
        assert r.model_id == "mem://scripted"
    assert handler.batch_elements_kwargs() == {"min_batch_size": 4, "max_batch_size": 8}


def test_two_handler_copies_share_one_model_and_its_state(tiny_model):
    """Beam pickles the handler per DoFn instance and loads the model once per process:
    every copy then reads sha256 and batch ids from the one runner."""
    path, _ = tiny_model
    handler = NumpyModelHandler(OnnxLoader(str(path)))
    copy = pickle.loads(pickle.dumps(handler))
    model = handler.load_model()
    facts = [h.run_batch(_images(2), model)[1] for h in (handler, copy, handler, copy)]
    assert {f.model_sha256 for f in facts} == {sha256_hex(path.read_bytes())}
    ids = [f.batch_id for f in facts]
    prefix = {i.rsplit("-", 1)[0] for i in ids}
    assert len(prefix) == 1 and [int(i.rsplit("-", 1)[1]) for i in ids] == [1, 2, 3, 4]


def _images(n: int) -> list:
    rng = np.random.default_rng(n)
    return [rng.standard_normal((8, 8, 3)).astype(np.float32) for _ in range(n)]


def test_a_multiprocess_shared_proxy_of_the_onnx_runner_runs(tiny_model):
    path, _ = tiny_model
    loader = OnnxLoader(str(path))
    shared = MultiProcessShared(loader, tag=f"onnx-{uuid.uuid4().hex}", always_proxy=True)
    proxy = shared.acquire()
    try:
        direct = loader()
        x = np.stack(_images(3))
        np.testing.assert_allclose(proxy.infer({"images": x})["logits"],
                                   direct.infer({"images": x})["logits"], rtol=1e-6)
        handler = NumpyModelHandler(loader)
        results, facts = handler.run_batch(_images(5), proxy)
        assert len(results) == 5 and facts.model_sha256 == direct.info().sha256
        assert proxy.info() == direct.info()
    finally:
        shared.release(proxy)


def test_model_handler_compatibility(tiny_model):
    """In the style of Beam's base_test.test_model_handler_compatibility, for every handler."""
    path, _ = tiny_model
    for handler in (NumpyModelHandler(OnnxLoader(str(path))),
                    NumpyModelHandler(ScriptedLoader()),
                    KeyedBatchHandler(NumpyModelHandler(ScriptedLoader()))):
        model = handler.load_model()
        assert list(handler.run_inference([], model)) == []
        with pytest.raises(ValueError, match=r"inference_args: this handler takes none.*\['some_arg'\]"):
            list(handler.run_inference([], model, inference_args={"some_arg": 1}))
        handler.validate_inference_args({})
        handler.validate_inference_args(None)
        if isinstance(handler, KeyedBatchHandler):   # Beam adds the keys' bytes
            assert handler.get_num_bytes([("k", np.zeros(3, np.float32))]) > 12
        else:
            assert handler.get_num_bytes([np.zeros(3, np.float32)]) == 12
        assert handler.get_metrics_namespace().startswith("beam_trt_inference_")
        assert handler.get_resource_hints() == {}
        assert set(handler.batch_elements_kwargs()) == {"min_batch_size", "max_batch_size"}


def test_keyed_handler_returns_batch_facts_on_the_key():
    handler = KeyedBatchHandler(NumpyModelHandler(ScriptedLoader(1, 4)))
    model = handler.load_model()
    out = list(handler.run_inference([(ItemKey(f"u{i}", {}), x) for i, x in
                                      enumerate(_examples(3))], model))
    assert [k.uri for k, _ in out] == ["u0", "u1", "u2"]
    assert {k.batch.batch_id for k, _ in out} == {out[0][0].batch.batch_id}
    assert out[0][0].batch.size == 3 and out[0][0].batch.model_sha256 == "f" * 64


def _run_keyed(loader, check=None, n: int = 3) -> None:
    """Images through RunInference, Postprocess and the pipeline's BatchFailures, as
    build.py wires them; ``check`` sees every dead letter."""
    from transforms.postprocess import Postprocess
    from transforms.records import DEAD_LETTER
    from transforms.spec import ModelSpec

    spec = ModelSpec(name="s", height=1, width=2, output_kind="probabilities")
    p = TestPipeline()
    inferred, dlq = (
        p | beam.Create([(ItemKey(f"u{i}", {}), x) for i, x in enumerate(_examples(n))])
        | RunInference(KeyedBatchHandler(NumpyModelHandler(loader))).with_exception_handling())
    post = inferred | beam.ParDo(Postprocess(spec, "scripted", 1)).with_outputs(
        DEAD_LETTER, main="preds")
    letters = ((dlq.failed_inferences | beam.ParDo(BatchFailures()), post[DEAD_LETTER])
               | beam.Flatten())
    if check is not None:
        assert_that(letters, check)
    p.run().wait_until_finish()


def test_per_batch_error_becomes_dead_letters_with_the_real_type_and_message():
    """A batch that always fails is split down to single images; each is a dead letter
    with the real exception's type and message (not Beam's tuple)."""
    def check(letters):
        assert sorted(d["uri"] for d in letters) == ["u0", "u1", "u2"]
        for d in letters:
            assert d["stage"] == "inference" and d["error_type"] == "InputMismatch"
            assert d["message"] == "output 'y' is NaN for this batch"

    _run_keyed(ScriptedLoader(1, 4, InputMismatch("output 'y' is NaN for this batch")), check)


class PoisonRunner(ScriptedRunner):
    """Fails any batch that holds the example whose first value is 5 (a poison input)."""

    def infer(self, feeds: Feeds) -> Feeds:
        if (feeds["x"][:, 0] == 5).any():
            raise ValueError("NaN in the output for a poison input")
        return super().infer(feeds)


@dataclass(frozen=True)
class PoisonLoader(ScriptedLoader):
    def __call__(self) -> ScriptedRunner:
        return PoisonRunner(self.min_batch, self.max_batch, None)


def test_one_poison_input_costs_only_itself():
    """Split and retry: 8 images, one poison; 7 scored, 1 dead letter (Triton-style: the
    error travels with that image only). Splits: 8 -> 4 -> 2 -> 1."""
    handler = NumpyModelHandler(PoisonLoader(1, 8))
    runner = handler.load_model()
    results = list(handler.run_inference(_examples(8), runner))
    failed = [i for i, r in enumerate(results) if isinstance(r.inference, ItemFailure)]
    assert failed == [5]
    assert results[5].inference == ItemFailure("ValueError", "NaN in the output for a poison "
                                                             "input")
    for i, r in enumerate(results):
        if i != 5:
            np.testing.assert_array_equal(r.inference, [2 * i, -2 * i])

    def check(letters):
        assert [(d["uri"], d["stage"], d["error_type"]) for d in letters] == [
            ("u5", "inference", "ValueError")]

    _run_keyed(PoisonLoader(1, 8), check, n=8)


@pytest.mark.parametrize("error,match", [
    (CudaError("cudaMemcpyAsync failed: cudaErrorIllegalAddress"),
     "systemic error, not the images' fault: CudaError: cudaMemcpyAsync failed"),
    (EOFError("proxy connection closed"),
     "SharedModelError: the model .* failed outside the batch: EOFError"),
])
def test_systemic_errors_fail_the_bundle_not_the_images(error, match):
    with pytest.raises(Exception, match=match):
        _run_keyed(ScriptedLoader(1, 4, error))


def test_exception_facts_reads_beams_tuple_and_plain_exceptions():
    import traceback

    try:
        raise InputMismatch("bad row")
    except InputMismatch as exc:
        beam_tuple = (type(exc), repr(exc), traceback.format_exception(exc))
        assert exception_facts(beam_tuple)[1:] == ("InputMismatch", "bad row")
        assert exception_facts(exc)[1:] == ("InputMismatch", "bad row")


def test_proxy_errors_are_systemic():
    class Gone(ScriptedRunner):
        def info(self):
            raise ConnectionResetError("server process exited")

    with pytest.raises(SharedModelError, match="ConnectionResetError: server process exited"):
        NumpyModelHandler(ScriptedLoader()).run_batch(_examples(2), Gone(1, 4, None))


class EncodedRunner(ScriptedRunner):
    """Takes whole files (like the DALI runner): y = file length, per row."""

    def __init__(self) -> None:
        super().__init__(2, 4, None)
        self._info = RunnerInfo("scripted", "mem://enc", "e" * 64, "cpu",
                                (TensorInfo("__encoded__", "encoded", ()),), ("len",), 2, 2, 4)

    def infer(self, feeds: Feeds) -> Feeds:
        rows = feeds["__encoded__"]
        self.calls.append(len(rows))
        return {"len": np.array([len(r) for r in rows], np.int64)}


def test_encoded_inputs_follow_the_same_split_and_pad_rule():
    files = [b"x" * (i + 1) for i in range(5)] + [np.frombuffer(b"abcdefg", np.uint8)]
    runner = EncodedRunner()
    results = list(NumpyModelHandler(ScriptedLoader()).run_inference(files, runner))
    assert [int(r.inference) for r in results] == [1, 2, 3, 4, 5, 7]
    assert runner.calls == [4, 2]
    (empty,) = NumpyModelHandler(ScriptedLoader()).run_inference([b""], runner)
    assert empty.inference.error_type == "InputMismatch"
    assert "expected the file's bytes as a non-empty 1-D uint8" in empty.inference.message


class OomRunner(ScriptedRunner):
    """Runs out of device memory on any chunk above 3 rows, as a GPU would."""

    def infer(self, feeds: Feeds) -> Feeds:
        rows = feeds["x"].shape[0]
        if rows > 3:
            self.calls.append(-rows)
            raise CudaError("cudaMalloc failed: cudaErrorMemoryAllocation (out of memory)")
        return super().infer(feeds)


def test_out_of_memory_lowers_the_ceiling_for_good():
    runner = OomRunner(1, 8, None)
    handler = NumpyModelHandler(ScriptedLoader(1, 8))
    first = list(handler.run_inference(_examples(8), runner))
    assert all(isinstance(r.inference, np.ndarray) for r in first)   # nothing lost
    assert runner.calls == [-8, -4, 2, 2, 2, 2] and runner.batch_ceiling() == 2
    runner.calls.clear()
    list(handler.run_inference(_examples(5), runner))                # starts at the ceiling
    assert runner.calls == [2, 2, 1]


def test_out_of_memory_at_the_minimum_batch_is_systemic():
    runner = OomRunner(4, 8, None)                                   # cannot go below 4
    with pytest.raises(CudaError, match="out of memory"):
        NumpyModelHandler(ScriptedLoader(4, 8)).run_inference(_examples(8), runner)
