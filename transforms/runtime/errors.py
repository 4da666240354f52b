"""Errors a runner raises, split by what the pipeline must do with them.

Why the split: a per-image fault (a bad file, an odd shape) becomes one dead letter,
but a fault of the worker or the model (CUDA, a dead shared-model process, an engine
that cannot run) would turn every image into a dead letter while the job stays
green. ``SystemicError`` and its subclasses fail the bundle instead, with the cause.
"""

from __future__ import annotations

from dataclasses import dataclass


class SystemicError(RuntimeError):
    """Not one image's fault: the model, the device or the worker. Fails the bundle."""


class ModelLoadError(SystemicError):
    """The model (or engine) could not be loaded; the message says which file and why."""


class SharedModelError(SystemicError):
    """The process that holds a shared model copy (``model_copies``) failed or went away."""


@dataclass(frozen=True)
class ItemFailure:
    """One example's result when the model failed on that example alone (after the batch
    was split and retried): like Triton, the error travels with that response only."""

    error_type: str
    message: str


_OOM_SIGNS = ("out of memory", "cudaErrorMemoryAllocation", "CUDA_ERROR_OUT_OF_MEMORY",
              "Failed to allocate memory", "OutOfMemory", "BFCArena")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA, TensorRT or ONNX Runtime running out of device memory, by what they say."""
    text = f"{type(exc).__name__}: {exc}"
    return any(sign.lower() in text.lower() for sign in _OOM_SIGNS)


class InputMismatch(ValueError):
    """A batch or model spec does not match what the model declares."""
