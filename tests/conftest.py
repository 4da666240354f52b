"""Shared fixtures: sample images, tiny ONNX models built with onnx.helper, and a real
GCS emulator server on 127.0.0.1."""

from __future__ import annotations

import os

# google-auth must never probe the GCE metadata server from tests (no network here);
# these are read when google.auth is first imported, so set them before anything else.
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:9")
os.environ.setdefault("GCE_METADATA_IP", "127.0.0.1:9")
os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "test-project")

import socket  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


def sample_paths() -> list:
    return sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))


def make_linear_model(path: Path, *, input_name: str = "images", layout: str = "NHWC",
                      hw: Sequence[int] = (8, 8), classes: int = 3, batch: object = "N",
                      dtype: int = None, seed: int = 0) -> np.ndarray:
    """A real ONNX model: global average pool over HW, then a dense layer (logits).

    Returns the weight matrix so tests can compute the exact expected output.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype = TensorProto.FLOAT if dtype is None else dtype
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3, classes)).astype(np.float32)
    shape = [batch, hw[0], hw[1], 3] if layout == "NHWC" else [batch, 3, hw[0], hw[1]]
    axes = [1, 2] if layout == "NHWC" else [2, 3]
    # opset 17: ReduceMean takes axes as an attribute (TensorRT 8.6's parser needs that)
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["pooled"], axes=axes, keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(input_name, dtype, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return w


@pytest.fixture
def tiny_model(tmp_path: Path):
    path = tmp_path / "tiny.onnx"
    w = make_linear_model(path)
    return path, w


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A real gcp-storage-emulator server on 127.0.0.1 with bucket 'bucket'."""
    from apache_beam.internal.gcp import auth
    from gcp_storage_emulator.server import create_server

    # No credentials exist here: record that up front instead of letting Beam retry
    # google.auth.default() with backoff for ~30 s. Beam then builds the anonymous
    # storage client, which honours STORAGE_EMULATOR_HOST.
    auth._Credentials._credentials_init = True
    auth._Credentials._credentials = None
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="bucket")
    server.start()
    host = f"http://127.0.0.1:{port}"
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = host
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield host
    server.stop()
    if old is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = old


@pytest.fixture
def gcs_client(gcs_emulator: str):
    from google.cloud import storage

    client = storage.Client.create_anonymous_client()
    client.project = "test-project"
    return client


def _gpu_reason() -> str:
    try:
        from transforms.runtime.cuda import check, cudart

        if check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount") < 1:
            return "no CUDA device"
    except Exception as exc:  # noqa: BLE001
        return f"no usable CUDA runtime ({type(exc).__name__}: {exc})"
    return ""


@pytest.fixture(scope="session")
def gpu() -> None:
    reason = _gpu_reason()
    if reason:
        pytest.skip(f"needs an NVIDIA GPU: {reason}")


@pytest.fixture(scope="session")
def trt(gpu):
    try:
        import tensorrt
    except ImportError as exc:
        pytest.skip(f"needs the tensorrt package: {exc}")
    return tensorrt
