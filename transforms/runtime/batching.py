"""Batch rules every runner and handler shares: checking examples against what the model
declares, stacking, splitting over the maximum, padding up to the minimum.

Why one module: ONNX Runtime and TensorRT must agree exactly on how a batch is split,
how a short leftover chunk is handled and how results come back (in order, owned
copies), so switching backend never changes what the rest of the pipeline sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from transforms.runtime.errors import InputMismatch

Feeds = Dict[str, np.ndarray]


@dataclass(frozen=True)
class DeclaredInput:
    """An input as a model or engine declares it: numpy dtype (None if unknown here),
    the dtype as the format names it (for messages), and the shape (None = dynamic)."""

    name: str
    dtype: Optional[np.dtype]
    dtype_text: str
    shape: Tuple[Optional[int], ...]


def format_shape(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


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


def batch_inputs(batch: Sequence[Any], input_names: Sequence[str]) -> Dict[str, List[np.ndarray]]:
    """Examples are arrays (single-input models) or {name: array} (multi-input)."""
    if len(input_names) == 1 and batch and isinstance(batch[0], np.ndarray):
        return {input_names[0]: list(batch)}
    out: Dict[str, List[np.ndarray]] = {n: [] for n in input_names}
    for i, ex in enumerate(batch):
        if not isinstance(ex, Mapping) or sorted(ex) != sorted(input_names):
            raise InputMismatch(f"example {i}: expected a dict with keys {sorted(input_names)}, "
                                f"got {type(ex).__name__}")
        for n in input_names:
            out[n].append(ex[n])
    return out


def stack_batch(batch: Sequence[np.ndarray], dtype: np.dtype,
                example_shape: Sequence[Optional[int]], name: str) -> np.ndarray:
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


ENCODED_DTYPE = "encoded"   # TensorInfo.dtype of an input that takes whole encoded files


def stack_encoded(batch: Sequence[Any], name: str) -> np.ndarray:
    """Encoded files (bytes or 1-D uint8 arrays) as a 1-D object array: one row each, so
    the same split / pad / order rule applies to them as to pixel tensors."""
    out = np.empty(len(batch), dtype=object)
    for i, ex in enumerate(batch):
        if isinstance(ex, (bytes, bytearray)):
            ex = np.frombuffer(bytes(ex), dtype=np.uint8)
        if not isinstance(ex, np.ndarray) or ex.dtype != np.uint8 or ex.ndim != 1 or not ex.size:
            raise InputMismatch(f"input '{name}' example {i}: expected the file's bytes as a "
                                f"non-empty 1-D uint8 array, got {type(ex).__name__}")
        out[i] = ex
    return out


def chunk_ranges(n: int, max_batch: int) -> List[Tuple[int, int]]:
    """[start, stop) ranges of at most ``max_batch``, in order."""
    if max_batch <= 0:
        raise ValueError(f"max_batch: expected a positive integer, got {max_batch}")
    return [(i, min(i + max_batch, n)) for i in range(0, n, max_batch)]


def pad_rows(feeds: Feeds, rows: int) -> Feeds:
    """Repeat the last row until every input has ``rows`` rows.

    Why the last row and not zeros: a real example cannot make a model produce NaN or
    trip a range check the way an all-zero tensor can; padded outputs are dropped.
    """
    out = {}
    for name, arr in feeds.items():
        extra = rows - arr.shape[0]
        out[name] = arr if extra <= 0 else np.concatenate(
            [arr, np.repeat(arr[-1:], extra, axis=0)])
    return out


def run_in_chunks(stacked: Feeds, min_batch: int, max_batch: int,
                  infer: Callable[[Feeds], Mapping[str, np.ndarray]]) -> Feeds:
    """The one leftover rule for every backend.

    Rows go to ``infer`` in consecutive chunks of at most ``max_batch``; a chunk shorter
    than ``min_batch`` (an engine profile's minimum, an ONNX model's fixed batch) is
    padded up to it and the padded outputs are dropped. Outputs come back in order.
    """
    n = next(iter(stacked.values())).shape[0]
    parts: Dict[str, List[np.ndarray]] = {}
    for lo, hi in chunk_ranges(n, max_batch):
        rows = hi - lo
        chunk = {k: v[lo:hi] for k, v in stacked.items()}
        for name, arr in infer(pad_rows(chunk, min_batch)).items():
            if arr.shape[0] < rows:
                raise InputMismatch(f"output '{name}' has {arr.shape[0]} rows for a batch "
                                    f"of {rows}")
            parts.setdefault(name, []).append(arr[:rows])
    return {name: np.concatenate(p) for name, p in parts.items()}


def split_rows(outputs: Mapping[str, np.ndarray], n: int) -> List[Dict[str, np.ndarray]]:
    """Per-image copies of each output's rows; never views into a shared buffer."""
    return [{name: np.array(arr[i], copy=True) for name, arr in outputs.items()}
            for i in range(n)]
