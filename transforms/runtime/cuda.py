"""cuda-python helpers: checked calls, and small owner objects for device memory, pinned
host memory, streams and events, each with an explicit free().

Why cuda-python (cuda.bindings) and not pycuda: it ships prebuilt wheels for every
CUDA 12/13 Python, it is what TensorRT 10's samples and Beam use, and pycuda has to
be compiled against the CUDA toolkit at install time. The pattern follows TensorRT's
samples/python/common_runtime.py: every status is checked, every allocation has one owner.
"""

from __future__ import annotations

import ctypes
from typing import Any, Tuple

import numpy as np

from transforms.runtime.errors import SystemicError


class CudaError(SystemicError):
    """A CUDA runtime call failed; the message names the call and CUDA's own error."""


def cudart() -> Any:
    """The CUDA runtime bindings: cuda.bindings.runtime (cuda-python >= 12.6) or the
    older cuda.cudart module (cuda-python 12.x before the split)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # type: ignore[no-redef]
        except ImportError as exc:
            raise CudaError(
                "cuda-python is not installed; expected it for the TensorRT backend "
                "(pip install 'beam-trt-inference[tensorrt]')") from exc
    return runtime


def cuda_python_available() -> bool:
    """Whether cuda-python imports (the TensorRT and DALI paths need it; ONNX Runtime's
    GPU providers do not)."""
    try:
        cudart()
    except CudaError:
        return False
    return True


def check(result: Any, call: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on any error."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
        raise CudaError(f"{call} failed: {name.decode()} ({text.decode()})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class DeviceBuffer:
    """``nbytes`` of device memory, freed exactly once."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart().cudaMalloc(max(self.nbytes, 1)), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            check(cudart().cudaFree(ptr), "cudaFree")


class PinnedBuffer:
    """Page-locked host memory, so async copies really are asynchronous (and fast)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart().cudaMallocHost(max(self.nbytes, 1)), "cudaMallocHost"))
        raw = (ctypes.c_uint8 * max(self.nbytes, 1)).from_address(self.ptr)
        self._bytes = np.frombuffer(raw, dtype=np.uint8)

    def view(self, dtype: np.dtype, shape: Tuple[int, ...]) -> np.ndarray:
        """A view of the first prod(shape) elements; valid only until free()."""
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if count > self.nbytes:
            raise ValueError(f"view of {count} bytes; expected at most {self.nbytes}")
        return self._bytes[:count].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self._bytes = np.empty(0, np.uint8)
            check(cudart().cudaFreeHost(ptr), "cudaFreeHost")


class Stream:
    """One CUDA stream: every copy and launch of an engine is ordered on it."""

    def __init__(self) -> None:
        self.handle = check(cudart().cudaStreamCreate(), "cudaStreamCreate")

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def free(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check(cudart().cudaStreamDestroy(handle), "cudaStreamDestroy")


class Event:
    """A CUDA event for GPU-side timing (elapsed between two records on a stream)."""

    def __init__(self) -> None:
        self.handle = check(cudart().cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        check(cudart().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def elapsed_ms(self, start: "Event") -> float:
        check(cudart().cudaEventSynchronize(self.handle), "cudaEventSynchronize")
        return float(check(cudart().cudaEventElapsedTime(start.handle, self.handle),
                           "cudaEventElapsedTime"))

    def free(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check(cudart().cudaEventDestroy(handle), "cudaEventDestroy")


def memcpy_htod_async(dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
    rt = cudart()
    check(rt.cudaMemcpyAsync(dst.ptr, src.ctypes.data, src.nbytes,
                             rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle),
          "cudaMemcpyAsync(HostToDevice)")


def memset_async(ptr: int, nbytes: int, stream: Any) -> None:
    """Zero ``nbytes`` at device address ``ptr``, ordered on ``stream`` (a Stream or a handle)."""
    handle = stream.handle if isinstance(stream, Stream) else stream
    check(cudart().cudaMemsetAsync(ptr, 0, nbytes, handle), "cudaMemsetAsync")


def memcpy_dtoh_async(dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
    rt = cudart()
    check(rt.cudaMemcpyAsync(dst.ctypes.data, src.ptr, dst.nbytes,
                             rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle),
          "cudaMemcpyAsync(DeviceToHost)")


def device_count() -> int:
    """GPUs this process can see (after CUDA_VISIBLE_DEVICES)."""
    return int(check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount"))


def set_device(device: int) -> None:
    """Make ``device`` current for the calling thread: CUDA's current device is per thread,
    so every thread that touches a runner's buffers or stream sets it first."""
    check(cudart().cudaSetDevice(device), f"cudaSetDevice({device})")


def current_device() -> int:
    return int(check(cudart().cudaGetDevice(), "cudaGetDevice"))


def device_info(device: int = 0) -> Tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of ``device``."""
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode()
    return str(name).strip(), f"{props.major}.{props.minor}"


def memory_used(device: int = 0) -> int:
    """Bytes of device memory in use (total - free), for leak checks."""
    free, total = check(cudart().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(total) - int(free)
