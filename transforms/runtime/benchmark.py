"""Latency of one backend on random batches: host->host and device-only, per batch size.

Beam-free, so the CLI (pipeline.benchmark) and any notebook time engines the same way.
Host<->host time is numpy batch in, numpy result out, with every copy included.
GPU-only time excludes the host copies: CUDA events around execute_async_v3 for
TensorRT, and ONNX Runtime's I/O binding with device-resident tensors for the CUDA EP.
"""

from __future__ import annotations

import os
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


def bench_dali(files: Sequence[bytes], spec: Any, batch: int, passes: int = 3,
               options: Any = None) -> Dict[str, Any]:
    """DALI alone: encoded files -> the spec's tensors in a device buffer, batch by batch,
    synchronized per batch; the median images/s over ``passes`` passes of all files."""
    from transforms.runtime import cuda
    from transforms.runtime.gpu_preprocess import DaliOptions, DaliPreprocessor

    pre = DaliPreprocessor(spec, batch, options or DaliOptions())
    row = int(np.prod(spec.input_shape(1)[1:])) * np.dtype(spec.input_dtype).itemsize
    dst, stream = cuda.DeviceBuffer(row * batch), cuda.Stream()
    arrays = [np.frombuffer(f, np.uint8) for f in files]
    try:
        pre.to_device(arrays[:batch], dst.ptr, stream.handle)     # warm-up
        stream.synchronize()
        rates = []
        for _ in range(passes):
            start = time.perf_counter()
            for lo in range(0, len(arrays), batch):
                pre.to_device(arrays[lo:lo + batch], dst.ptr, stream.handle)
                stream.synchronize()
            rates.append(len(arrays) / (time.perf_counter() - start))
    finally:
        dst.free()
        stream.free()
    return {"images": len(arrays), "batch": batch, "passes": passes,
            "images_per_s": statistics.median(rates), "images_per_s_all": rates}


class PeriodicSampler:
    """Calls ``_sample()`` every ``period_s`` in a thread between ``__enter__`` and
    ``__exit__``; ``_setup()`` runs first, in that thread. An exception there or in a
    sample ends the sampling and is kept in ``error`` (a benchmark reports it, it does not
    fail the run it watches)."""

    def __init__(self, period_s: float) -> None:
        import threading

        self._period = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start = 0.0
        self.error: Optional[str] = None

    def _setup(self) -> None:
        pass

    def _sample(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        try:
            self._setup()
            while not self._stop.is_set():
                self._sample()
                self._stop.wait(self._period)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            self.error = f"{type(exc).__name__}: {exc}"

    def __enter__(self) -> "PeriodicSampler":
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)


class GpuSampler(PeriodicSampler):
    """Samples GPU utilisation, memory and the processes holding a context on the GPU with
    NVML (nvidia-ml-py) every ``period_s`` in a thread; ``summary()`` gives the mean and
    max. Without NVML it reports nothing.

    Why the processes: on two GPUs, each SDK process placed on the second also opened a
    context on the first as it exited (docs/benchmarks.md, issue 13); the most processes
    seen on a GPU against the SDK processes placed there shows that in every run."""

    def __init__(self, device: int = 0, period_s: float = 0.05) -> None:
        super().__init__(period_s)
        self._device = device
        self._util: List[float] = []
        self._mem: List[float] = []
        self._procs: List[int] = []

    def _setup(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(self._device)

    def _sample(self) -> None:
        self._util.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        self._mem.append(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20)
        try:     # a container may hide other processes from NVML: then none are counted
            self._procs.append(len(self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)))
        except self._nvml.NVMLError:
            pass

    def summary(self) -> Dict[str, Any]:
        if not self._util:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_max_mib": None,
                    "gpu_processes_max": None, "nvml_error": self.error}
        return {"gpu_util_mean": statistics.mean(self._util), "gpu_util_max": max(self._util),
                "gpu_mem_max_mib": max(self._mem), "samples": len(self._util),
                "gpu_processes_max": max(self._procs) if self._procs else None}


def _is_record_shard(path: str) -> bool:
    name = os.path.basename(path)
    return ("predictions" in path or "errors" in path) and "bundles" not in name


def _count_lines(path: str, offset: int = 0) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


class LineCounter:
    """Lines in a run's prediction and error shards, temporary or final, counting only
    the bytes appended since the last call.

    Why: re-reading every shard each second cost more than a second at 1,000,000
    predictions (about 200 MB) on a machine busy with the run, so the steady rate came
    from a few late samples (8,862 images/s against its main stage's 11,120 on the H200).
    Shards only grow while written; a finalized shard is a new path (counted once, its
    temporary path dropped), and a file that shrank is counted again.
    """

    def __init__(self) -> None:
        self._seen: Dict[str, Tuple[int, int]] = {}     # path -> (bytes counted, lines)

    def count(self, out_dir: str) -> int:
        seen: Dict[str, Tuple[int, int]] = {}
        for root, _, files in os.walk(out_dir):
            for name in files:
                path = os.path.join(root, name)
                if not _is_record_shard(path):
                    continue
                try:
                    size = os.path.getsize(path)
                    done, lines = self._seen.get(path, (0, 0))
                    if size < done:
                        done, lines = 0, 0
                    if size > done:
                        lines += _count_lines(path, done)
                        done = size
                except OSError:      # renamed or removed between listing and reading
                    continue
                seen[path] = (done, lines)
        self._seen = seen
        return sum(lines for _, lines in seen.values())


class ShardProgress(PeriodicSampler):
    """Samples the lines in a run's shards (``LineCounter``) every ``period_s`` in a
    thread while a run writes.

    Why: a run's images/s includes its start-up (imports, engines, DALI pipelines: 20-35 s
    for 16 SDK processes on the H100), which long-lived Dataflow workers pay once. The
    steady rate is the growth of the shards between 10% and 90% of ``total``.
    """

    def __init__(self, out_dir: str, period_s: float = 1.0) -> None:
        super().__init__(period_s)
        self._dir = out_dir
        self._counter = LineCounter()
        self.samples: List[Tuple[float, int]] = []

    def _sample(self) -> None:
        self.samples.append((round(time.perf_counter() - self._start, 2),
                             self._counter.count(self._dir)))

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._sample()          # the end state, so a run shorter than one period counts

    def steady_rate(self, total: int) -> Dict[str, Any]:
        """Images/s between the first sample at >= 10% and the last at <= 90% of total."""
        window = [(t, n) for t, n in self.samples if 0.1 * total <= n <= 0.9 * total]
        first_t = next((t for t, n in self.samples if n > 0), None)
        if len(window) < 2 or window[-1][0] <= window[0][0]:
            return {"steady_images_per_s": None, "steady_samples": len(window),
                    "first_output_s": first_t}
        (t0, n0), (t1, n1) = window[0], window[-1]
        return {"steady_images_per_s": round((n1 - n0) / (t1 - t0), 1),
                "steady_samples": len(window), "first_output_s": first_t}
