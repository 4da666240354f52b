"""cuda-python helpers: a clear error without cuda-python; real allocations with a GPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from transforms.runtime import cuda


def test_missing_cuda_python_is_named():
    if importlib.util.find_spec("cuda") is not None:
        pytest.skip("cuda-python is installed; this checks the message where it is not")
    with pytest.raises(cuda.CudaError, match=r"cuda-python is not installed.*\[tensorrt\]"):
        cuda.cudart()


@pytest.mark.gpu
def test_buffers_roundtrip_and_free(gpu):
    stream = cuda.Stream()
    dev, host = cuda.DeviceBuffer(4096), cuda.PinnedBuffer(4096)
    try:
        src = host.view(np.float32, (1024,))
        src[:] = np.arange(1024, dtype=np.float32)
        cuda.memcpy_htod_async(dev, src, stream)
        back = np.zeros(1024, np.float32)
        cuda.memcpy_dtoh_async(back, dev, stream)
        stream.synchronize()
        np.testing.assert_array_equal(back, np.arange(1024, dtype=np.float32))
        with pytest.raises(ValueError, match="expected at most 4096"):
            host.view(np.float32, (2048,))
    finally:
        for obj in (dev, host, stream):
            obj.free()
            obj.free()  # idempotent
    with pytest.raises(cuda.CudaError, match="cudaMalloc failed"):
        cuda.DeviceBuffer(1 << 50)
