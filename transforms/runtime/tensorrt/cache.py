"""A shared cache of TensorRT plans, one per (TensorRT, GPU, ONNX, precision, profile).

Why: a plan runs only on the GPU model and TensorRT version it was built for, and a
Dataflow job may land on any GPU type. Workers look for a matching plan under
``--engine_cache``; the first worker that finds none builds one with the same builder
as ``pipeline.build_engine`` and publishes it for the rest.

Layout: ``<root>/trt-<version>/sm<cc>/<gpu-slug>/<onnx-sha256[:16]>/<precision>-<profile>/``
holds ``<uuid>.plan`` and ``<uuid>.plan.json``. A builder writes the plan first and its
sidecar second, each a single object (atomic on GCS), under a name no other builder
uses. The sidecar is the commit marker: a reader accepts a plan only when its sidecar
exists, matches the key field by field, and the plan's sha256 equals the sidecar's.
Concurrent builders therefore never overwrite each other (at worst two build the same
plan), and a stale, partial or mismatched plan is never used.

A cache that cannot be listed or read (no permission, a wrong bucket) is not a miss:
treating it as one would make every worker spend minutes building and then fail to
publish. It raises EngineCacheError, a systemic error that fails the bundle.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from transforms.runtime.errors import SystemicError
from transforms.runtime.storage import read_bytes, sha256_hex, write_bytes
from transforms.runtime.tensorrt.sidecar import EngineLoadError, EngineMismatch, Sidecar

LOG = logging.getLogger(__name__)

Identity = Tuple[str, str, str]  # (TensorRT version, GPU name, compute capability)


class EngineCacheError(SystemicError):
    """The cache prefix cannot be listed, read or written; not a miss."""


def _filesystems():
    from apache_beam.io.filesystems import FileSystems  # gs:// and local, lazily

    return FileSystems


def is_not_found(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the object does not exist."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NotFound":
            return True
        text = str(exc)
        if "404" in text or "No such file" in text or "Not Found" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


@dataclass(frozen=True)
class EngineKey:
    """Everything a plan depends on; its path is the cache directory."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    onnx_sha256: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int

    @property
    def path(self) -> str:
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-")
        return "/".join([f"trt-{self.tensorrt_version}",
                         f"sm{self.compute_capability.replace('.', '')}", gpu,
                         self.onnx_sha256[:16],
                         f"{self.precision}-b{self.min_batch}-{self.opt_batch}-{self.max_batch}"])

    def mismatch(self, s: Sidecar) -> Optional[str]:
        """Why a sidecar does not serve this key, or None when it does."""
        checks = [
            ("tensorrt_version", s.tensorrt_version, self.tensorrt_version),
            ("gpu_name", s.gpu_name, self.gpu_name),
            ("compute_capability", s.compute_capability, self.compute_capability),
            ("onnx_sha256", s.onnx_sha256, self.onnx_sha256),
            ("precision", s.precision, self.precision),
            ("profile batches", (s.min_batch, s.opt_batch, s.max_batch),
             (self.min_batch, self.opt_batch, self.max_batch)),
        ]
        for name, got, want in checks:
            if got != want:
                return f"{name} {got!r}, expected {want!r}"
        return None


BuildFn = Callable[[str, "EngineKey"], Tuple[bytes, Sidecar]]


@dataclass(frozen=True)
class CachedEngine:
    plan: bytes
    sidecar: Sidecar
    uri: str
    built_here: bool


class EngineCache:
    """Find or build-and-publish the plan for this worker's TensorRT and GPU."""

    def __init__(self, root: str, build: BuildFn, identity: Callable[[], Identity]) -> None:
        self._root = root.rstrip("/")
        self._build = build
        self._identity = identity

    def key(self, onnx_sha256: str, precision: str, min_batch: int, opt_batch: int,
            max_batch: int) -> EngineKey:
        version, gpu, cc = self._identity()
        return EngineKey(version, gpu, cc, onnx_sha256, precision, min_batch, opt_batch,
                         max_batch)

    def directory(self, key: EngineKey) -> str:
        return f"{self._root}/{key.path}"

    def lookup(self, key: EngineKey) -> Optional[CachedEngine]:
        """The first published plan that serves ``key``; mismatches are skipped, loudly."""
        pattern = f"{self.directory(key)}/*.plan.json"
        try:
            found = _filesystems().match([pattern])[0].metadata_list
        except Exception as exc:  # noqa: BLE001 - filesystems raise several types
            if is_not_found(exc):
                return None
            raise EngineCacheError(f"engine cache: cannot list {pattern} ({type(exc).__name__}: "
                                   f"{exc}); expected a readable prefix") from exc
        for meta in sorted(found, key=lambda m: m.path):
            side_uri = meta.path
            plan_uri = side_uri[: -len(".json")]
            try:
                sidecar = Sidecar.from_json(read_bytes(side_uri, "engine sidecar").decode(),
                                            source=side_uri)
                why = key.mismatch(sidecar)
                if why:
                    raise EngineMismatch(f"{side_uri}: {why}")
                plan = read_bytes(plan_uri, "TensorRT plan")
                sidecar.check_plan(sha256_hex(plan), source=plan_uri)
            except (EngineMismatch, EngineLoadError) as exc:  # never use a doubtful plan
                LOG.warning("engine cache: skipping %s: %s", plan_uri, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - I/O: a deleted plan is skipped, the rest fail
                if is_not_found(exc):
                    LOG.warning("engine cache: skipping %s: %s", plan_uri, exc)
                    continue
                raise EngineCacheError(f"engine cache: cannot read {side_uri} or its plan "
                                       f"({exc}); expected a readable prefix") from exc
            return CachedEngine(plan, sidecar, plan_uri, built_here=False)
        return None

    def publish(self, key: EngineKey, plan: bytes, sidecar: Sidecar) -> str:
        """Plan first, sidecar (the commit marker) second, under a name of our own."""
        why = key.mismatch(sidecar)
        if why:
            raise EngineMismatch(f"engine cache: the fresh build does not match its key: {why}")
        sidecar.check_plan(sha256_hex(plan), source="fresh build")
        plan_uri = f"{self.directory(key)}/{uuid.uuid4().hex}.plan"
        for uri, data in ((plan_uri, plan), (plan_uri + ".json", sidecar.to_json().encode())):
            try:
                write_bytes(uri, data)      # one object on GCS, temp + rename on disk
            except Exception as exc:  # noqa: BLE001 - filesystems raise several types
                raise EngineCacheError(f"engine cache: cannot write {uri} ({exc}); expected "
                                       "a writable prefix") from exc
        return plan_uri

    def get_or_build(self, onnx_uri: str, precision: str, min_batch: int, opt_batch: int,
                     max_batch: int) -> CachedEngine:
        onnx_sha = sha256_hex(read_bytes(onnx_uri, "ONNX model"))
        key = self.key(onnx_sha, precision, min_batch, opt_batch, max_batch)
        hit = self.lookup(key)
        if hit is not None:
            LOG.info("engine cache hit: %s", hit.uri)
            return hit
        LOG.warning("engine cache miss for %s; building (minutes)", self.directory(key))
        plan, sidecar = self._build(onnx_uri, key)
        uri = self.publish(key, plan, sidecar)
        return CachedEngine(plan, sidecar, uri, built_here=True)


def tensorrt_build(timing_cache: Optional[str] = None,
                   optimization_level: Optional[int] = None) -> BuildFn:
    """The real builder (transforms.runtime.tensorrt.builder) as a BuildFn."""

    def build(onnx_uri: str, key: EngineKey) -> Tuple[bytes, Sidecar]:
        from transforms.runtime.tensorrt.builder import BuildOptions, build as trt_build

        opts = BuildOptions(onnx=onnx_uri, output="<engine cache>", min_batch=key.min_batch,
                            opt_batch=key.opt_batch, max_batch=key.max_batch,
                            fp16=key.precision == "fp16", tf32=key.precision != "fp32",
                            timing_cache=timing_cache,
                            builder_optimization_level=optimization_level)
        plan, sidecar, _ = trt_build(opts)
        return plan, sidecar

    return build


