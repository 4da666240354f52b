"""TensorRT fed by DALI: encoded JPEG bytes in, the engine's outputs out, pixels never on the host.

The runner's one input is the batch of encoded files (``ENCODED``, a 1-D object array of
uint8 arrays); DALI writes the preprocessed batch straight into the engine's input buffer
on the engine's stream (TrtEngine.run_filled).

If DALI fails for a batch, the batch is split and retried, down to single images; a file
that fails alone gets a zeroed input row and ``GPU_OK`` False in the outputs. The
pipeline sends exactly those images to the Pillow path (their example is the encoded
bytes), so none is lost and none is scored twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Sequence, Tuple

import numpy as np

from transforms.runtime.batching import ENCODED_DTYPE
from transforms.runtime.errors import SystemicError
from transforms.runtime.gpu_preprocess import DaliOptions, DaliPreprocessor, fill_bisecting
from transforms.runtime.runner import Feeds, Runner, RunnerInfo, TensorInfo
from transforms.runtime.tensorrt.runner import TrtLoader, TrtRunner
from transforms.spec import ModelSpec

ENCODED = "__encoded__"      # the runner's input: encoded image files
GPU_OK = "__gpu_ok__"        # an extra output: False where DALI could not decode the file


@dataclass(frozen=True)
class TrtDaliLoader:
    """A TrtLoader plus the spec DALI reproduces on the GPU."""

    trt: TrtLoader
    spec: ModelSpec
    dali: DaliOptions = field(default_factory=DaliOptions)

    backend = "tensorrt"

    def batch_bounds(self) -> Tuple[int, int]:
        return self.trt.batch_bounds()

    def __call__(self) -> "TrtDaliRunner":
        runner = self.trt()
        try:   # DALI on the engine's device (its CUDA index in this process)
            options = replace(self.dali, device_id=runner.engine.device)
            pre = DaliPreprocessor(self.spec, runner.info().max_batch, options)
        except Exception:
            runner.close()
            raise
        return TrtDaliRunner(runner, pre)


class TrtDaliRunner(Runner):
    """One engine and one DALI pipeline; batches are serialized by the engine's lock."""

    def __init__(self, runner: TrtRunner, pre: DaliPreprocessor) -> None:
        super().__init__()
        self._trt = runner
        self._pre = pre
        base = runner.info()
        if len(base.inputs) != 1:
            raise SystemicError(f"{base.model_uri}: GPU preprocessing needs a single-input "
                                f"engine, it has {[t.name for t in base.inputs]}")
        self._input = base.inputs[0].name
        self._info = RunnerInfo(
            backend=base.backend, model_uri=base.model_uri, sha256=base.sha256,
            device=base.device, inputs=(TensorInfo(ENCODED, ENCODED_DTYPE, ()),),
            outputs=base.outputs + (GPU_OK,), min_batch=base.min_batch,
            opt_batch=base.opt_batch, max_batch=base.max_batch,
            details=dict(base.details, preprocess="gpu"))

    def info(self) -> RunnerInfo:
        return self._info

    def _fill(self, encoded: Sequence[np.ndarray], ok: np.ndarray):
        """The run_filled callback: decode into the engine's buffer, bisecting on failure."""
        row = self._trt.engine.row_bytes(self._input)

        def fill(ptr: int, stream: int) -> None:
            fill_bisecting(self._pre, encoded, ptr, row, stream, ok)

        return fill

    def infer(self, feeds: Feeds) -> Feeds:
        encoded: List[np.ndarray] = list(feeds[ENCODED])
        ok = np.ones(len(encoded), dtype=bool)
        outputs: Dict[str, np.ndarray] = self._trt.engine.run_filled(
            self._input, len(encoded), self._fill(encoded, ok))
        outputs[GPU_OK] = ok
        return outputs

    def close(self) -> None:
        self._trt.close()
        self._pre = None
