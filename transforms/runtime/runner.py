"""What every runner exposes, and the per-model batch counter.

Why methods only: with ``model_copies`` Beam hands the handler a MultiProcessShared
proxy of the runner, and a proxy forwards method calls, not attribute reads. So a
runner's whole surface is ``info()``, ``infer(feeds)``, ``next_batch_id()`` and
``close()``, and everything per model (session or engine, sha256, batch counter,
lock) lives on the runner, never on the handler (Polygraphy's runner shape).
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

Feeds = Dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorInfo:
    """An input as the runner will accept it: numpy dtype name, per-example shape
    (None for a dynamic dimension), batch dimension excluded."""

    name: str
    dtype: str
    example_shape: Tuple[Optional[int], ...]


@dataclass(frozen=True)
class RunnerInfo:
    """Read-only facts about a loaded model; small and picklable, so a proxy returns it."""

    backend: str
    model_uri: str
    sha256: str
    device: str
    inputs: Tuple[TensorInfo, ...]
    outputs: Tuple[str, ...]
    min_batch: int
    opt_batch: int
    max_batch: Optional[int]        # None: no limit (a dynamic ONNX batch)
    details: Mapping[str, str] = field(default_factory=dict)


class BatchCounter:
    """Distinct, increasing batch ids for one loaded model: ``<pid>-<runner>-<n>``."""

    def __init__(self) -> None:
        self._prefix = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def next_id(self) -> str:
        with self._lock:
            return f"{self._prefix}-{next(self._count)}"


class Runner(ABC):
    """A loaded model. ``infer`` takes one chunk of at most ``info().max_batch`` rows and
    at least ``info().min_batch`` (batching.run_in_chunks makes sure of both)."""

    def __init__(self) -> None:
        self._batches = BatchCounter()
        self._ceiling: Optional[int] = None
        self._ceiling_lock = threading.Lock()

    @abstractmethod
    def info(self) -> RunnerInfo:
        """What was loaded and what it accepts."""

    @abstractmethod
    def infer(self, feeds: Feeds) -> Feeds:
        """Outputs by name, each a copy the caller owns."""

    def next_batch_id(self) -> str:
        """One id per batch of the handler; the counter is this model's, across threads."""
        return self._batches.next_id()

    def batch_ceiling(self) -> Optional[int]:
        """The largest chunk to send now: below the profile's max after an out-of-memory
        error (for the rest of this model's life), else None."""
        return self._ceiling

    def lower_batch_ceiling(self, failed_rows: int) -> Optional[int]:
        """After an out-of-memory error on ``failed_rows`` rows: halve, but not below the
        model's minimum batch. Returns the new ceiling, or None if it cannot go lower."""
        with self._ceiling_lock:
            lowest = self.info().min_batch
            new = max(lowest, failed_rows // 2)
            if new >= failed_rows:
                return None
            if self._ceiling is None or new < self._ceiling:
                self._ceiling = new
            return self._ceiling

    def close(self) -> None:
        """Release what the model holds (device memory, sessions); safe to call twice."""
