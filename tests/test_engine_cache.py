"""The engine cache against a real GCS emulator; the TensorRT build is replaced by a
builder stand-in injected through the cache's build seam (TensorRT is absent in CI)."""

from __future__ import annotations

import threading
import uuid

import pytest

from transforms.runtime.storage import sha256_hex
from transforms.runtime.tensorrt.sidecar import Sidecar, TensorSpec
from transforms.runtime.tensorrt.cache import EngineCache, EngineKey
from tests.test_trt_runner import TensorRTEngineHandler

H100 = ("8.6.0", "NVIDIA H100 80GB HBM3", "9.0")
L4 = ("8.6.0", "NVIDIA L4", "8.9")


class StandInBuilder:
    """Builds a deterministic 'plan' and a true sidecar for it; counts builds."""

    def __init__(self, barrier: threading.Barrier = None) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        self._barrier = barrier

    def __call__(self, onnx_uri: str, key: EngineKey):
        with self._lock:
            self.calls += 1
        if self._barrier is not None:
            self._barrier.wait(timeout=30)  # both workers miss before either publishes
        plan = f"PLAN {key.path} {uuid.uuid4().hex}".encode()
        return plan, sidecar_for(key, plan)


def sidecar_for(key: EngineKey, plan: bytes, **override) -> Sidecar:
    fields = dict(
        tensorrt_version=key.tensorrt_version, gpu_name=key.gpu_name,
        compute_capability=key.compute_capability,
        tensors=(TensorSpec("input", "input", "float32", (-1, 224, 224, 3),
                            (key.min_batch, 224, 224, 3), (key.opt_batch, 224, 224, 3),
                            (key.max_batch, 224, 224, 3)),
                 TensorSpec("prob", "output", "float32", (-1, 2))),
        precision=key.precision, onnx_sha256=key.onnx_sha256, plan_sha256=sha256_hex(plan))
    fields.update(override)
    return Sidecar(**fields)


@pytest.fixture
def onnx_uri(gcs_client, tiny_model):
    path, _ = tiny_model
    name = f"models/{uuid.uuid4().hex}.onnx"
    gcs_client.bucket("bucket").blob(name).upload_from_string(path.read_bytes())
    return f"gs://bucket/{name}"


def _root() -> str:
    return f"gs://bucket/engines-{uuid.uuid4().hex[:8]}"


def _objects(gcs_client, root: str) -> list:
    prefix = root[len("gs://bucket/"):]
    return sorted(b.name for b in gcs_client.bucket("bucket").list_blobs(prefix=prefix))


def test_miss_builds_then_hit(gcs_client, onnx_uri):
    root, builder = _root(), StandInBuilder()
    cache = EngineCache(root, builder, lambda: H100)
    first = cache.get_or_build(onnx_uri, "fp16", 1, 16, 32)
    assert first.built_here and builder.calls == 1
    assert first.uri.startswith(f"{root}/trt-8.6.0/sm90/nvidia-h100-80gb-hbm3/")
    assert "/fp16-b1-16-32/" in first.uri
    second = cache.get_or_build(onnx_uri, "fp16", 1, 16, 32)
    assert not second.built_here and builder.calls == 1
    assert (second.uri, second.plan) == (first.uri, first.plan)
    names = _objects(gcs_client, root)
    assert len(names) == 2 and names[1] == names[0] + ".json"


def test_other_gpu_or_precision_is_another_key(gcs_client, onnx_uri):
    root, builder = _root(), StandInBuilder()
    EngineCache(root, builder, lambda: H100).get_or_build(onnx_uri, "fp16", 1, 16, 32)
    l4 = EngineCache(root, builder, lambda: L4).get_or_build(onnx_uri, "fp16", 1, 16, 32)
    tf32 = EngineCache(root, builder, lambda: H100).get_or_build(onnx_uri, "tf32", 1, 16, 32)
    assert l4.built_here and tf32.built_here and builder.calls == 3
    assert "/sm89/nvidia-l4/" in l4.uri


def test_two_concurrent_builders_do_not_corrupt_each_other(gcs_client, onnx_uri):
    root = _root()
    builder = StandInBuilder(threading.Barrier(2))
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(EngineCache(root, builder, lambda: H100)
                           .get_or_build(onnx_uri, "tf32", 1, 8, 16))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and builder.calls == 2 and len(results) == 2
    assert len({r.uri for r in results}) == 2  # distinct names, no overwrite
    assert len(_objects(gcs_client, root)) == 4
    third = EngineCache(root, StandInBuilder(), lambda: H100).get_or_build(
        onnx_uri, "tf32", 1, 8, 16)
    assert not third.built_here and third.uri == min(r.uri for r in results)
    assert sha256_hex(third.plan) == third.sidecar.plan_sha256


def test_mismatched_or_corrupt_plans_are_never_used(gcs_client, onnx_uri, caplog):
    root = _root()
    cache = EngineCache(root, StandInBuilder(), lambda: H100)
    key = cache.key(sha256_hex(gcs_client.bucket("bucket").blob(onnx_uri[len("gs://bucket/"):])
                               .download_as_bytes()), "fp16", 1, 16, 32)
    bucket = gcs_client.bucket("bucket")
    base = f"{cache.directory(key)[len('gs://bucket/'):]}"
    stale = b"stale plan from TensorRT 8.5"
    bucket.blob(f"{base}/0-stale.plan").upload_from_string(stale)
    bucket.blob(f"{base}/0-stale.plan.json").upload_from_string(
        sidecar_for(key, stale, tensorrt_version="8.5.3").to_json())
    corrupt = b"truncated plan"
    bucket.blob(f"{base}/1-corrupt.plan").upload_from_string(corrupt)
    bucket.blob(f"{base}/1-corrupt.plan.json").upload_from_string(
        sidecar_for(key, b"the real plan bytes").to_json())
    with caplog.at_level("WARNING"):
        got = cache.get_or_build(onnx_uri, "fp16", 1, 16, 32)
    assert got.built_here and "0-stale" not in got.uri and "1-corrupt" not in got.uri
    text = caplog.text
    assert "tensorrt_version '8.5.3', expected '8.6.0'" in text
    assert "does not match its sidecar" in text


def test_local_directory_works_too(tmp_path, tiny_model):
    path, _ = tiny_model
    cache = EngineCache(str(tmp_path / "engines"), StandInBuilder(), lambda: H100)
    built = cache.get_or_build(str(path), "fp32", 1, 4, 8)
    assert built.built_here
    assert not cache.get_or_build(str(path), "fp32", 1, 4, 8).built_here


def test_publish_refuses_a_build_for_another_key(tmp_path):
    cache = EngineCache(str(tmp_path), StandInBuilder(), lambda: H100)
    key = cache.key("a" * 64, "fp16", 1, 16, 32)
    plan = b"p"
    with pytest.raises(Exception, match="precision 'tf32', expected 'fp16'"):
        cache.publish(key, plan, sidecar_for(key, plan, precision="tf32"))


def test_handler_with_cache_batches_by_requested_profile():
    h = TensorRTEngineHandler(engine_cache="gs://bucket/engines", onnx_uri="gs://bucket/m.onnx",
                              profile=(1, 16, 64))
    assert h.batch_elements_kwargs() == {"min_batch_size": 16, "max_batch_size": 64}
    with pytest.raises(ValueError, match="expected engine_uri, or engine_cache with onnx_uri"):
        TensorRTEngineHandler(engine_cache="gs://bucket/engines")


def test_an_unreadable_cache_is_an_error_not_a_miss(tmp_path):
    """A prefix that cannot be listed must not make every worker build (and then fail to
    publish): it fails with the prefix and the cause."""
    from transforms.runtime.tensorrt.cache import EngineCacheError, is_not_found

    builder = StandInBuilder()
    cache = EngineCache("nosuchscheme://bucket/engines", builder, lambda: H100)
    with pytest.raises(EngineCacheError, match=r"engine cache: cannot list nosuchscheme://bucket/"
                                               r"engines/.*expected a readable prefix"):
        cache.lookup(cache.key("a" * 64, "fp16", 1, 16, 32))
    assert builder.calls == 0
    from google.api_core import exceptions as gexc
    assert is_not_found(gexc.NotFound("no such object")) and is_not_found(FileNotFoundError())
    assert not is_not_found(gexc.Forbidden("caller does not have storage.objects.list"))
