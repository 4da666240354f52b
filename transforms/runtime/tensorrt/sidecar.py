"""The sidecar JSON that travels with every TensorRT plan, and the profile's batch bounds.

Why a sidecar: a plan only runs on the TensorRT version and GPU it was built for, and
deserializing a mismatched plan fails with an opaque error or not at all. The sidecar
records both, plus the plan's sha256, and is checked before the plan is touched. This
module needs no TensorRT, so the launcher and CPU tests read sidecars too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from transforms.runtime.errors import ModelLoadError

SIDECAR_VERSION = 1

# The one default optimization profile (MIN, OPT, MAX batch): the builder CLI, the
# engine cache and --trt_profile all use it.
DEFAULT_PROFILE: Tuple[int, int, int] = (1, 16, 32)


class EngineMismatch(ModelLoadError):
    """The plan was built for another TensorRT, GPU or file than the one at hand."""


class EngineLoadError(ModelLoadError):
    """The plan cannot be deserialized or used."""


@dataclass(frozen=True)
class TensorSpec:
    """One I/O tensor as the engine declares it; -1 marks a dynamic dimension."""

    name: str
    mode: str  # "input" | "output"
    dtype: str  # numpy dtype name
    shape: Tuple[int, ...]
    profile_min: Optional[Tuple[int, ...]] = None
    profile_opt: Optional[Tuple[int, ...]] = None
    profile_max: Optional[Tuple[int, ...]] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        tup = lambda v: None if v is None else tuple(int(x) for x in v)  # noqa: E731
        return cls(name=d["name"], mode=d["mode"], dtype=d["dtype"], shape=tup(d["shape"]),
                   profile_min=tup(d.get("profile_min")), profile_opt=tup(d.get("profile_opt")),
                   profile_max=tup(d.get("profile_max")))


def profile_batches(inputs: Sequence[TensorSpec]) -> Tuple[int, int, int]:
    """(min, opt, max) batch that every input's profile admits: the largest minimum,
    the smallest opt and the smallest maximum of dim 0; (1, max, 1) without profiles."""
    mins = [t.profile_min[0] for t in inputs if t.profile_min]
    opts = [t.profile_opt[0] for t in inputs if t.profile_opt]
    maxes = [t.profile_max[0] for t in inputs if t.profile_max]
    top = min(maxes) if maxes else 1
    return (max(mins) if mins else 1, min(opts) if opts else top, top)


@dataclass(frozen=True)
class Sidecar:
    """What a plan was built from and for; written by pipeline.build_engine."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    tensors: Tuple[TensorSpec, ...]
    precision: str
    onnx_sha256: str
    plan_sha256: str
    builder: Mapping[str, Any] = field(default_factory=dict)
    version: int = SIDECAR_VERSION

    @property
    def inputs(self) -> List[TensorSpec]:
        return [t for t in self.tensors if t.mode == "input"]

    @property
    def outputs(self) -> List[TensorSpec]:
        return [t for t in self.tensors if t.mode == "output"]

    @property
    def min_batch(self) -> int:
        return profile_batches(self.inputs)[0]

    @property
    def opt_batch(self) -> int:
        return profile_batches(self.inputs)[1]

    @property
    def max_batch(self) -> int:
        return profile_batches(self.inputs)[2]

    def to_json(self) -> str:
        d = asdict(self)
        d["tensors"] = [asdict(t) for t in self.tensors]
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<sidecar>") -> "Sidecar":
        try:
            d = json.loads(text)
            return cls(
                tensorrt_version=str(d["tensorrt_version"]), gpu_name=str(d["gpu_name"]),
                compute_capability=str(d["compute_capability"]),
                tensors=tuple(TensorSpec.from_dict(t) for t in d["tensors"]),
                precision=str(d["precision"]), onnx_sha256=str(d["onnx_sha256"]),
                plan_sha256=str(d["plan_sha256"]), builder=dict(d.get("builder", {})),
                version=int(d.get("version", SIDECAR_VERSION)))
        except KeyError as exc:
            raise EngineLoadError(f"{source}: not a valid engine sidecar: missing key "
                                  f"{exc.args[0]!r}; expected the JSON that "
                                  "pipeline.build_engine writes beside the plan") from exc
        except (ValueError, TypeError) as exc:
            raise EngineLoadError(f"{source}: not a valid engine sidecar ({exc!r})") from exc

    def check_runtime(self, tensorrt_version: str, gpu_name: str, compute_capability: str,
                      source: str = "<sidecar>") -> None:
        """Refuse a plan built for another TensorRT or GPU, naming both sides."""
        diffs = []
        if self.tensorrt_version != tensorrt_version:
            diffs.append(f"TensorRT {self.tensorrt_version} (running {tensorrt_version})")
        if self.compute_capability != compute_capability:
            diffs.append(f"compute capability {self.compute_capability} "
                         f"(this GPU has {compute_capability})")
        if self.gpu_name != gpu_name:
            diffs.append(f"GPU '{self.gpu_name}' (this GPU is '{gpu_name}')")
        if diffs:
            raise EngineMismatch(
                f"{source}: the plan was built for " + "; ".join(diffs)
                + ". Rebuild it on this machine with python -m pipeline.build_engine.")

    def check_plan(self, plan_sha256: str, source: str = "<plan>") -> None:
        if plan_sha256 != self.plan_sha256:
            raise EngineMismatch(
                f"{source}: plan sha256 {plan_sha256[:16]}... does not match its sidecar "
                f"({self.plan_sha256[:16]}...); the plan is corrupt or the sidecar belongs "
                "to another plan")
