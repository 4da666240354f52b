"""The TensorRT builder library: ONNX bytes -> plan bytes + Sidecar (+ timing cache).

`python -m pipeline.build_engine` is the CLI over it; the engine cache calls it on a
worker. This is the seed's `trtexec --onnx ... --minShapes/--optShapes/--maxShapes --saveEngine`
step as part of the product. It works on TensorRT 8.6 and 10.x/11.x by feature
detection, never by version string:
- the EXPLICIT_BATCH network flag is set only where it exists;
- TF32/FP16 builder flags are used where they exist;
- where the FP16 flag is gone (strongly typed TensorRT), the network is built
  strongly typed and an fp16 engine needs an fp16 ONNX.

Build time is the cost to plan for. EfficientNetV2-S fp16 at the default optimization
level 3 took over 8 minutes on an H100 with TensorRT 8.6, and 192 s at level 1. A
timing cache (--timing_cache) makes later builds of similar networks on the same GPU
much faster. Lower levels trade a few percent of run time for minutes of build time.

Polygraphy (``NetworkFromOnnxBytes`` -> ``CreateConfig`` -> ``EngineBytesFromNetwork``)
was considered and not adopted: it would be one more package whose release must track
the TensorRT in NVIDIA's container, and the parts this builder needs beyond it (the
feature-guarded strongly-typed fallback, the optimization level and tactic sources by
name on 8.6 and 10, parser errors naming the node, a Sidecar from the built engine)
would still be written here. The split follows its loaders anyway: bytes in, bytes out.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from transforms.runtime.fold import fold_normalisation
from transforms.runtime.storage import read_bytes, sha256_hex
from transforms.runtime.tensorrt.engine import CollectingLogger, tensor_specs, trt_module
from transforms.runtime.tensorrt.sidecar import DEFAULT_PROFILE, Sidecar
from transforms.spec import ModelSpec

Shape = Tuple[int, ...]
DEFAULT_TACTICS = "-CUBLAS,-CUBLAS_LT,-CUDNN"


class BuildError(RuntimeError):
    """The engine could not be built; the message says which step and why."""


def parse_shapes(text: Optional[str], flag: str) -> Dict[str, Shape]:
    """trtexec syntax: 'input_1:1x384x384x3,mask:1x16' -> {name: shape}."""
    out: Dict[str, Shape] = {}
    if not text:
        return out
    for part in text.split(","):
        name, sep, dims = part.strip().rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d <= 0 for d in shape):
            raise BuildError(f"{flag}: expected NAME:DxDxD (positive dims), got {part!r}")
        out[name] = shape
    return out


def parse_tactic_sources(text: str, known: Sequence[str]) -> Tuple[List[str], List[str]]:
    """trtexec syntax: '-CUBLAS,+CUDNN' -> (enable, disable); unknown names are errors."""
    enable, disable = [], []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        sign, name = part[0], part[1:].upper()
        if sign not in "+-" or name not in known:
            raise BuildError(f"--tactic_sources: expected +NAME or -NAME with NAME in "
                             f"{list(known)}, got {part!r}")
        (enable if sign == "+" else disable).append(name)
    return enable, disable


def derive_profiles(inputs: Mapping[str, Shape], min_batch: int, opt_batch: int,
                    max_batch: int, min_shapes: Mapping[str, Shape],
                    opt_shapes: Mapping[str, Shape], max_shapes: Mapping[str, Shape]
                    ) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    """(min, opt, max) per network input: full shapes where given, else the batch flags
    applied to dim 0 with the other dims taken from the network (which must be static)."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise BuildError(f"batch profile: expected 1 <= --min_batch <= --opt_batch <= "
                         f"--max_batch, got {min_batch}/{opt_batch}/{max_batch}")
    for flag, given in (("--min_shapes", min_shapes), ("--opt_shapes", opt_shapes),
                        ("--max_shapes", max_shapes)):
        unknown = sorted(set(given) - set(inputs))
        if unknown:
            raise BuildError(f"{flag}: no network input named {unknown}; inputs are "
                             f"{sorted(inputs)}")
    out = {}
    for name, shape in inputs.items():
        given = [s.get(name) for s in (min_shapes, opt_shapes, max_shapes)]
        if any(given):
            if not all(given):
                raise BuildError(f"input '{name}': expected all of --min/--opt/--max_shapes, "
                                 f"got {[g is not None for g in given]}")
            triple = tuple(given)
        else:
            if any(d < 0 for d in shape[1:]):
                raise BuildError(f"input '{name}' has dynamic dims {list(shape)} beyond the "
                                 "batch; give --min_shapes/--opt_shapes/--max_shapes")
            rest = tuple(shape[1:])
            triple = ((min_batch,) + rest, (opt_batch,) + rest, (max_batch,) + rest)
        for g in triple:
            if len(g) != len(shape) or any(s >= 0 and s != d for s, d in zip(shape, g)):
                raise BuildError(f"input '{name}': profile shape {list(g)} does not fit the "
                                 f"network's {list(shape)}")
        if not all(a <= b <= c for a, b, c in zip(*triple)):
            raise BuildError(f"input '{name}': expected min <= opt <= max per dim, got "
                             f"{[list(t) for t in triple]}")
        out[name] = triple  # type: ignore[assignment]
    return out


@dataclass(frozen=True)
class BuildOptions:
    """One engine build, validated before TensorRT is touched."""

    onnx: str
    output: str
    min_batch: int = DEFAULT_PROFILE[0]
    opt_batch: int = DEFAULT_PROFILE[1]
    max_batch: int = DEFAULT_PROFILE[2]
    min_shapes: Mapping[str, Shape] = field(default_factory=dict)
    opt_shapes: Mapping[str, Shape] = field(default_factory=dict)
    max_shapes: Mapping[str, Shape] = field(default_factory=dict)
    fp16: bool = False
    tf32: bool = True
    workspace_gb: float = 4.0
    timing_cache: Optional[str] = None
    builder_optimization_level: Optional[int] = None
    tactic_sources: str = DEFAULT_TACTICS
    # Fold this spec's normalisation into the plan (runtime/fold.py): the plan then takes
    # uint8 NHWC RGB pixels, and the sidecar records the spec under builder.folded_spec.
    fold_spec: Optional[ModelSpec] = None

    def __post_init__(self) -> None:
        if self.workspace_gb <= 0:
            raise BuildError(f"--workspace_gb: expected > 0, got {self.workspace_gb}")
        level = self.builder_optimization_level
        if level is not None and not 0 <= level <= 5:
            raise BuildError(f"--builder_optimization_level: expected 0..5, got {level}")

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else ("tf32" if self.tf32 else "fp32")


def _parser_errors(parser: Any) -> str:
    msgs = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        where = f"node {e.node()}"
        if hasattr(e, "node_name"):  # TensorRT 10+
            where += f" ({e.node_operator()} '{e.node_name()}')"
        msgs.append(f"{where}: {e.code()}: {e.desc()}")
    return "; ".join(msgs) or "no detail from the parser"


def _apply_tactics(trt: Any, config: Any, spec: str) -> None:
    known = list(trt.TacticSource.__members__)
    enable, disable = parse_tactic_sources(spec, known)
    mask = config.get_tactic_sources()
    for name in enable:
        mask |= 1 << int(trt.TacticSource.__members__[name])
    for name in disable:
        mask &= ~(1 << int(trt.TacticSource.__members__[name]))
    config.set_tactic_sources(mask)


def build(opts: BuildOptions) -> Tuple[bytes, Sidecar, Optional[bytes]]:
    """Build the plan; returns (plan, sidecar, serialized timing cache or None)."""
    from transforms.runtime.cuda import current_device, device_info

    trt = trt_module()
    onnx_bytes = read_bytes(opts.onnx, "ONNX model")
    source_sha = sha256_hex(onnx_bytes)      # the cache key and the sidecar name the source
    if opts.fold_spec is not None:
        onnx_bytes = fold_normalisation(onnx_bytes, opts.fold_spec, opts.onnx)
    logger = CollectingLogger()
    builder = trt.Builder(logger)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if hasattr(creation, "EXPLICIT_BATCH"):
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    if opts.fp16 and not has_fp16_flag:
        if not hasattr(creation, "STRONGLY_TYPED"):
            raise BuildError("--fp16: this TensorRT has neither an FP16 builder flag nor "
                             "strongly typed networks")
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        raise BuildError(f"{opts.onnx}: TensorRT's ONNX parser failed: {_parser_errors(parser)}")
    if network.num_outputs == 0:
        raise BuildError(f"{opts.onnx}: the parsed network has no outputs; nothing to build")
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape)
              for i in range(network.num_inputs)}
    profiles = derive_profiles(inputs, opts.min_batch, opts.opt_batch, opts.max_batch,
                               opts.min_shapes, opts.opt_shapes, opts.max_shapes)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
    if opts.builder_optimization_level is not None:
        if not hasattr(config, "builder_optimization_level"):
            raise BuildError("--builder_optimization_level: this TensorRT has no such setting")
        config.builder_optimization_level = opts.builder_optimization_level
    if hasattr(trt.BuilderFlag, "TF32"):
        (config.set_flag if opts.tf32 else config.clear_flag)(trt.BuilderFlag.TF32)
    if opts.fp16 and has_fp16_flag:
        if not builder.platform_has_fast_fp16:
            raise BuildError("--fp16: this GPU has no fast fp16")
        config.set_flag(trt.BuilderFlag.FP16)
    _apply_tactics(trt, config, opts.tactic_sources)
    cache_in = b""
    if opts.timing_cache and os.path.exists(opts.timing_cache):
        with open(opts.timing_cache, "rb") as f:
            cache_in = f.read()
    cache = config.create_timing_cache(cache_in)
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, (lo, mid, hi) in profiles.items():
        profile.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(profile)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        detail = "; ".join(logger.errors[-5:]) or "no detail from TensorRT"
        raise BuildError(f"{opts.onnx}: TensorRT built no engine: {detail}")
    plan = bytes(serialized)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise BuildError(f"{opts.onnx}: the fresh plan does not deserialize")
    gpu_name, cc = device_info(current_device())   # the device placement made current
    builder_info = {k: v for k, v in asdict(opts).items()
                    if k not in ("onnx", "output", "fold_spec")}
    if opts.fold_spec is not None:
        builder_info["folded_spec"] = opts.fold_spec.to_dict()
    builder_info["build_seconds"] = round(seconds, 1)
    sidecar = Sidecar(tensorrt_version=trt.__version__, gpu_name=gpu_name,
                      compute_capability=cc, tensors=tensor_specs(engine),
                      precision=opts.precision, onnx_sha256=source_sha,
                      plan_sha256=sha256_hex(plan), builder=builder_info)
    del engine
    timing = bytes(config.get_timing_cache().serialize()) if opts.timing_cache else None
    return plan, sidecar, timing
