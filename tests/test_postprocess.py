"""top-k, softmax and the prediction record."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.spec import ConfigError
from transforms.postprocess import Prediction, scores_from, select_output, softmax, top_k


def test_softmax_sums_to_one_and_is_stable():
    p = softmax(np.array([1000.0, 1001.0, 999.0]))
    assert abs(p.sum() - 1) < 1e-12 and np.argmax(p) == 1


def test_scores_probabilities_untouched():
    np.testing.assert_allclose(scores_from(np.array([[0.2, 0.8]]), "probabilities"), [0.2, 0.8])


def test_top_k_with_labels_and_ties():
    best = top_k(np.array([0.1, 0.5, 0.5, 0.3]), 3, ("a", "b", "c", "d"))
    assert [b["label"] for b in best] == ["b", "c", "d"]
    assert best[0]["score"] == 0.5


def test_top_k_clamps_and_numbers_without_labels():
    assert [b["label"] for b in top_k(np.array([0.3, 0.7]), 5, ())] == ["1", "0"]


def test_label_count_mismatch_is_config_error():
    with pytest.raises(ConfigError, match="the model spec has 2 labels, the model output has 3 classes"):
        top_k(np.zeros(3), 1, ("a", "b"))


def test_select_output():
    outs = {"a": np.zeros(1), "b": np.ones(1)}
    assert select_output(outs, None) is outs["a"]
    assert select_output(outs, "b") is outs["b"]
    with pytest.raises(ConfigError, match=r"expected 'c' among the model outputs \['a', 'b'\]"):
        select_output(outs, "c")


def test_record_fields():
    rec = Prediction("gs://b/x.jpg", ({"label": "sfw", "score": 0.9},), "m", "ab" * 32, "onnx",
                     "cpu", "1-a-1", 8, 1.23456, 2.0, 30.0, 0.1).to_record()
    assert set(rec) == {"uri", "top_k", "model_name", "model_sha256", "backend", "preprocess",
                        "batch_size", "decode_ms", "preprocess_ms", "inference_ms"}
    assert rec["preprocess"] == "cpu"
    assert rec["decode_ms"] == 1.235 and rec["batch_size"] == 8
