"""Latency of one backend on random batches: host->host and device-only, per batch size.

Beam-free, so the CLI (pipeline.benchmark) and any notebook time engines the same way.
Host<->host time is numpy batch in, numpy result out, with every copy included.
GPU-only time excludes the host copies: CUDA events around execute_async_v3 for
TensorRT, and ONNX Runtime's I/O binding with device-resident tensors for the CUDA EP.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from transforms.runtime.storage import read_bytes

BACKENDS = ("tensorrt", "onnx-cuda", "onnx-tensorrt", "onnx-cpu")
ORT_PROVIDERS = {
    "onnx-cuda": ["CUDAExecutionProvider"],
    "onnx-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    "onnx-cpu": ["CPUExecutionProvider"],
}


def summarize(host_s: Sequence[float], gpu_ms: Sequence[float], batch: int) -> Dict[str, Any]:
    med = statistics.median(host_s)
    return {
        "batch": batch, "iterations": len(host_s),
        "host_min_s": min(host_s), "host_med_s": med, "host_max_s": max(host_s),
        "gpu_med_ms": statistics.median(gpu_ms) if gpu_ms else None,
        "images_per_s": batch / med if med > 0 else None,
    }


def time_loop(fn: Callable[[], Optional[float]], warmup: int, iterations: int
              ) -> Tuple[List[float], List[float]]:
    """Call fn warmup + iterations times; fn may return a GPU-only time in ms."""
    for _ in range(warmup):
        fn()
    host, gpu = [], []
    for _ in range(iterations):
        start = time.perf_counter()
        g = fn()
        host.append(time.perf_counter() - start)
        if g is not None:
            gpu.append(g)
    return host, gpu


def _random(shape: Sequence[int], dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 255, size=shape).astype(dtype)
    return rng.uniform(-1, 1, size=shape).astype(dtype)


def bench_tensorrt(engine_path: str, batches: Sequence[int], warmup: int, iterations: int
                   ) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    from transforms.runtime.tensorrt.engine import TrtEngine
    from transforms.runtime.tensorrt.runner import load_sidecar

    sidecar = load_sidecar(engine_path)
    results = []
    with TrtEngine(read_bytes(engine_path, "TensorRT plan"), engine_path) as engine:
        for b in batches:
            if b > engine.max_batch:
                results.append({"batch": b, "error": f"above the profile max {engine.max_batch}"})
                continue
            feeds = {t.name: _random((b,) + t.profile_max[1:], t.dtype, b) for t in engine.inputs}
            gpu_once: List[float] = []

            def once() -> float:
                gpu_once.clear()
                engine.run(feeds, gpu_ms=gpu_once)
                return gpu_once[0]

            host, gpu = time_loop(once, warmup, iterations)
            results.append(summarize(host, gpu, b))
    info = {"precision": sidecar.precision, "tensorrt_version": sidecar.tensorrt_version,
            "builder": dict(sidecar.builder), "gpu_name": sidecar.gpu_name}
    return info, results


def bench_onnx(model_path: str, backend: str, batches: Sequence[int], warmup: int,
               iterations: int, fp16: bool) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    import onnxruntime as ort

    wanted = ORT_PROVIDERS[backend]
    missing = [p for p in wanted if p not in ort.get_available_providers()]
    if missing:
        raise RuntimeError(f"onnxruntime {ort.__version__} lacks {missing}")
    providers: List[Any] = list(wanted)
    if backend == "onnx-tensorrt":
        providers[0] = ("TensorrtExecutionProvider", {"trt_fp16_enable": fp16})
    session = ort.InferenceSession(read_bytes(model_path), providers=providers)
    if session.get_providers()[0] != wanted[0]:
        raise RuntimeError(f"{wanted[0]} did not load; onnxruntime fell back to "
                           f"{session.get_providers()}")
    inp = session.get_inputs()[0]
    dtype = {"tensor(float)": "float32", "tensor(float16)": "float16",
             "tensor(uint8)": "uint8"}[inp.type]
    example = [d if isinstance(d, int) and d > 0 else None for d in inp.shape[1:]]
    if None in example:
        raise RuntimeError(f"input {inp.name} has dynamic non-batch dims {inp.shape}")
    outputs = [o.name for o in session.get_outputs()]
    results = []
    for b in batches:
        x = _random([b] + example, dtype, b)
        host, _ = time_loop(lambda: session.run(outputs, {inp.name: x}) and None,
                            warmup, iterations)
        gpu: List[float] = []
        if backend != "onnx-cpu":
            binding = session.io_binding()
            binding.bind_ortvalue_input(inp.name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            for name in outputs:
                binding.bind_output(name, "cuda")

            def device_only() -> float:
                start = time.perf_counter()
                session.run_with_iobinding(binding)
                return (time.perf_counter() - start) * 1000.0

            _, gpu = time_loop(device_only, warmup, iterations)
        results.append(summarize(host, gpu, b))
    info = {"onnxruntime_version": ort.__version__, "providers": session.get_providers(),
            "precision": "fp16" if fp16 and backend == "onnx-tensorrt" else "fp32"}
    return info, results


def device_name() -> str:
    try:
        from transforms.runtime.cuda import device_info

        name, cc = device_info(0)
        return f"{name} (sm_{cc.replace('.', '')})"
    except Exception:  # noqa: BLE001 - CPU-only machines
        return f"CPU: {platform.processor() or platform.machine()}"
