"""ONNX Runtime: a loader (frozen, picklable) and the runner it builds.

Why our own and not Beam's OnnxModelHandlerNumpy: that one checks nothing about the
input and silently runs on CPU when the CUDA EP fails to load. This loader checks the
model against the spec when it loads, refuses a provider fallback, and the runner
owns everything per model so a MultiProcessShared proxy of it works.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from transforms.runtime.batching import DeclaredInput, check_declared_input
from transforms.runtime.errors import InputMismatch, ModelLoadError, SystemicError
from transforms.runtime.runner import Feeds, Runner, RunnerInfo, TensorInfo
from transforms.runtime.storage import read_bytes, resolve_uri, sha256_hex

LOG = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32      # BatchElements' ceiling for a dynamic-batch model
# execution providers that run on a GPU and take a device_id option
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def set_device_ids(options: Dict[str, Dict[str, str]], providers: Sequence[str],
                   device: int) -> Dict[str, Dict[str, str]]:
    """``options`` with ``device_id`` set for each GPU provider in ``providers``."""
    for name in GPU_PROVIDERS:
        if name in providers:
            options.setdefault(name, {})["device_id"] = str(device)
    return options

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _dim(d: Any) -> Optional[int]:
    return d if isinstance(d, int) and d > 0 else None


def declared_inputs(inputs: Sequence[Any]) -> List[DeclaredInput]:
    """ONNX Runtime NodeArgs as DeclaredInputs."""
    return [DeclaredInput(i.name, np.dtype(_ORT_DTYPES[i.type]) if i.type in _ORT_DTYPES
                          else None, i.type, tuple(_dim(d) for d in i.shape)) for i in inputs]


# (provider, ((key, value), ...)) pairs, as ONNX Runtime's providers list takes them
ProviderOptions = Tuple[Tuple[str, Tuple[Tuple[str, str], ...]], ...]


@dataclass(frozen=True)
class OnnxLoader:
    """Everything needed to load one ONNX model on one set of execution providers.

    ``input_name``, ``input_dtype`` and ``example_shape`` are what the model spec says;
    loading fails if the model declares otherwise.
    """

    model_uri: str
    providers: Tuple[str, ...] = ("CPUExecutionProvider",)
    provider_options: ProviderOptions = ()
    input_name: Optional[str] = None
    input_dtype: Optional[str] = None
    example_shape: Optional[Tuple[int, ...]] = None
    intra_op_num_threads: Optional[int] = None
    # GPU execution providers without a device_id: the GPU comes from placement (the
    # round-robin over the worker's GPUs, or --gpu_device), as for TensorRT engines
    device: Optional[int] = None
    confine: bool = True      # narrow the SDK process to its GPU (placement.place)

    backend = "onnx"

    def batch_bounds(self) -> Tuple[int, int]:
        """(min, max) batch for BatchElements, known without loading the model."""
        return 1, DEFAULT_MAX_BATCH

    def _session_providers(self, ort: Any, options: Dict[str, Dict[str, str]]) -> List[Any]:
        available = ort.get_available_providers()
        missing = [p for p in self.providers if p not in available]
        if missing:
            hint = (" (install beam-trt-inference[gpu] for onnxruntime-gpu)"
                    if any(p != "CPUExecutionProvider" for p in missing) else "")
            raise ModelLoadError(
                f"onnx_providers: expected {missing} to be available, this onnxruntime "
                f"{ort.__version__} has {available}{hint}")
        return [(p, options.get(p, {})) for p in self.providers]

    def placed_options(self) -> Tuple[Dict[str, Dict[str, str]], str]:
        """The provider options with the GPU's ``device_id`` filled in, and the device as
        records name it. Without this every session of a multi-GPU worker ran on GPU 0.
        A ``device_id`` already set (by the user, or by the GPU path's loader, which places
        first) is kept and nothing is placed again."""
        options = {name: dict(opts) for name, opts in self.provider_options}
        first = self.providers[0] if self.providers else "CPUExecutionProvider"
        if first not in GPU_PROVIDERS:
            return options, "cpu"
        if "device_id" in options.get(first, {}):
            return options, f"cuda:{options[first]['device_id']}"
        from transforms.runtime.placement import place, visible_count

        placed = place(self.device, confine=self.confine, count=visible_count)
        return set_device_ids(options, self.providers, placed.cuda_index), f"cuda:{placed.device}"

    def __call__(self) -> "OnnxRunner":
        import onnxruntime as ort

        path = resolve_uri(self.model_uri)
        data = read_bytes(self.model_uri)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_num_threads:
            opts.intra_op_num_threads = self.intra_op_num_threads
        options, device = self.placed_options()
        providers = self._session_providers(ort, options)
        try:
            session = ort.InferenceSession(data, sess_options=opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"{path}: onnxruntime cannot load the model: {exc}") from exc
        got = session.get_providers()
        if got[0] != self.providers[0]:
            raise ModelLoadError(
                f"{path}: expected to run on {self.providers[0]}, onnxruntime fell back to "
                f"{got} (check the CUDA/TensorRT libraries on this machine)")
        node = check_declared_input(path, "model", declared_inputs(session.get_inputs()),
                                    self.input_name, self.input_dtype, self.example_shape)
        LOG.info("loaded %s on %s", path, got)
        return OnnxRunner(session, self.model_uri, sha256_hex(data), node, got, device=device)


class OnnxRunner(Runner):
    """One InferenceSession (thread-safe in ONNX Runtime, so no lock) and its facts."""

    def __init__(self, session: Any, model_uri: str, sha256: str, decl: DeclaredInput,
                 providers: Sequence[str], device: str) -> None:
        super().__init__()
        self._session = session
        self._outputs = tuple(o.name for o in session.get_outputs())
        self._input = TensorInfo(decl.name, np.dtype(decl.dtype or np.float32).name,
                                 decl.shape[1:])
        fixed = decl.shape[0]
        self._info = RunnerInfo(
            backend="onnx", model_uri=model_uri, sha256=sha256, device=device,
            inputs=(self._input,), outputs=self._outputs,
            min_batch=fixed or 1, opt_batch=fixed or 1, max_batch=fixed,
            details={"providers": ",".join(providers)})

    def info(self) -> RunnerInfo:
        return self._info

    @property
    def session(self) -> Any:
        """The InferenceSession (None once closed), for runners that bind device memory."""
        return self._session

    def infer(self, feeds: Feeds) -> Feeds:
        if sorted(feeds) != [self._input.name]:
            raise InputMismatch(f"{self._info.model_uri}: expected inputs "
                                f"['{self._input.name}'], got {sorted(feeds)}")
        if self._session is None:
            raise SystemicError(f"{self._info.model_uri}: the runner is closed")
        result = self._session.run(list(self._outputs), dict(feeds))
        return dict(zip(self._outputs, result))

    def close(self) -> None:
        self._session = None
