"""Batch splitting, padding and ordering shared by every backend, on a real ONNX Runtime session."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from transforms.runtime.batching import chunk_ranges, pad_rows, run_in_chunks, split_rows
from transforms.runtime.errors import InputMismatch, ModelLoadError
from transforms.runtime.storage import bundled_model_path


def test_chunk_ranges():
    assert chunk_ranges(33, 32) == [(0, 32), (32, 33)]
    assert chunk_ranges(10, 32) == [(0, 10)]
    assert chunk_ranges(0, 4) == []
    with pytest.raises(ValueError, match="max_batch: expected a positive integer, got 0"):
        chunk_ranges(3, 0)


@pytest.mark.parametrize("n,max_batch", [(1, 4), (7, 4), (10, 4), (32, 32), (33, 32)])
def test_run_chunked_keeps_order(tiny_model, n, max_batch):
    path, _ = tiny_model
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(n).standard_normal((n, 8, 8, 3)).astype(np.float32)
    calls = []

    def run(feeds):
        calls.append(feeds["images"].shape[0])
        return {"logits": session.run(["logits"], feeds)[0]}

    got = run_in_chunks({"images": x}, 1, max_batch, run)
    want = session.run(["logits"], {"images": x})[0]
    np.testing.assert_allclose(got["logits"], want, rtol=1e-5, atol=1e-6)
    assert sum(calls) == n and max(calls) <= max_batch


def test_run_chunked_rejects_wrong_row_count():
    with pytest.raises(InputMismatch, match="output 'y' has 1 rows for a batch of 2"):
        run_in_chunks({"x": np.zeros((2, 1))}, 1, 2, lambda f: {"y": np.zeros((1, 1))})


@pytest.mark.parametrize("n,lo,hi,calls_want", [(6, 4, 4, [4, 4]), (5, 2, 4, [4, 2]),
                                                 (1, 3, 8, [3]), (9, 1, 4, [4, 4, 1])])
def test_short_chunks_are_padded_to_the_minimum_and_trimmed(n, lo, hi, calls_want):
    """The one leftover rule: a chunk below the minimum (an engine profile's, a fixed ONNX
    batch) is padded with its last row; outputs for the padding are dropped."""
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    calls = []

    def double(feeds):
        calls.append(feeds["x"].shape[0])
        return {"y": feeds["x"] * 2}

    got = run_in_chunks({"x": x}, lo, hi, double)
    assert calls == calls_want
    np.testing.assert_array_equal(got["y"], x * 2)


def test_pad_rows_repeats_the_last_row():
    got = pad_rows({"x": np.array([[1.0], [2.0]])}, 4)["x"]
    np.testing.assert_array_equal(got[:, 0], [1, 2, 2, 2])


def test_split_rows_are_owned_copies():
    rows = split_rows({"y": np.arange(6.0).reshape(3, 2)}, 3)
    assert all(r["y"].flags["OWNDATA"] for r in rows)


def test_bundled_model_path():
    assert bundled_model_path("bundled://open_nsfw").endswith("open-nsfw.onnx")
    with pytest.raises(ModelLoadError, match="unknown bundled model"):
        bundled_model_path("bundled://resnet")
