"""Which GPU a model copy goes to: round-robin over the visible devices, or one named.

Why a cross-process counter: Dataflow workers with 2, 4 or 8 GPUs run several SDK
processes (or several ``model_copies`` in one process), and each one loads its own
engine. Without placement every engine lands on device 0. The counter lives in a small
file under the temp directory, guarded by an exclusive flock, so the k-th copy loaded
on a VM goes to device k mod N whichever process loads it. ``--gpu_device N`` pins every
copy to one device instead.

One process, one GPU (``place``): where CUDA has not started in the process yet, the
process's ``CUDA_VISIBLE_DEVICES`` is narrowed to the GPU it was placed on before CUDA
starts, so nothing in it (a free at shutdown, a library's default device) can open a
context on another GPU.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable, List, MutableMapping, Optional

_LOCAL = threading.RLock()    # place() holds it around choose_device and _next_slot
_confined: Optional["Placement"] = None   # this process's one GPU, once narrowed to it
# set by Beam in the environment of every SDK process it starts (the local runner's
# SubprocessSdkWorker, Dataflow's boot), and nowhere else: the launcher, tests and scripts
# keep every GPU in view
SDK_PROCESS_MARK = "CONTROL_API_SERVICE_DESCRIPTOR"
COUNTER_FILE = os.path.join(tempfile.gettempdir(), "beam-trt-inference-gpu-round-robin")


def _next_slot(path: str) -> int:
    """A VM-wide counter: 0, 1, 2, ... across every process that calls it (an exclusive
    flock on the counter file; released when the file closes)."""
    with _LOCAL, open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read().strip()
        slot = int(text) if text.isdigit() else 0
        f.seek(0)
        f.truncate()
        f.write(str(slot + 1))
        return slot


def choose_device(requested: Optional[int] = None,
                  count: Optional[Callable[[], int]] = None,
                  counter_file: Optional[str] = None) -> int:
    """The device for the next model copy: ``requested`` if given (checked against what is
    visible), else round-robin over the visible devices."""
    if count is None:
        from transforms.runtime.cuda import device_count as count
    visible = count()
    if visible <= 0:
        raise RuntimeError("no CUDA device is visible (check the driver and "
                           "CUDA_VISIBLE_DEVICES)")
    if requested is not None:
        if not 0 <= requested < visible:
            raise ValueError(f"--gpu_device: expected 0..{visible - 1} (the visible devices), "
                             f"got {requested}")
        return requested
    return _next_slot(counter_file or COUNTER_FILE) % visible


@dataclass(frozen=True)
class Placement:
    """Where a model copy runs. ``device`` is its GPU among those the worker's processes
    see (the round-robin slot, and the ``cuda:N`` that records and per-GPU counts name);
    ``cuda_index`` is the index CUDA calls in this process use: 0 once the process is
    narrowed to that one GPU (``confined``), else ``device``."""

    device: int
    cuda_index: int
    confined: bool


def cuda_started() -> bool:
    """Whether CUDA's driver has been initialised in this process, asked without
    initialising it: ``cuDeviceGetCount`` answers CUDA_ERROR_NOT_INITIALIZED (3) until
    ``cuInit`` has run. No driver library: False (nothing can have started it)."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return lib.cuDeviceGetCount(ctypes.byref(count)) != 3


def visible_without_cuda(env: MutableMapping[str, str] = os.environ,
                         nvml_count: Optional[Callable[[], Optional[int]]] = None
                         ) -> Optional[List[str]]:
    """The GPUs CUDA will enumerate, as ``CUDA_VISIBLE_DEVICES`` entries, found without
    starting CUDA (whose device list is fixed at its start): the variable's own entries
    where it is set, else ``0..n-1`` for NVML's n GPUs. None where that cannot be known
    safely: MIG devices (CUDA lists MIG instances, NVML their parents), no NVML."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        entries = [e.strip() for e in value.split(",") if e.strip()]
        if any(e.upper().startswith("MIG") for e in entries):
            return None
        return entries
    n = (nvml_count or _nvml_count)()
    return None if n is None else [str(i) for i in range(n)]


def _nvml_count() -> Optional[int]:
    """NVML's GPU count, or None: no nvidia-ml-py, no driver, or a GPU in MIG mode."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        n = pynvml.nvmlDeviceGetCount()
        for i in range(n):
            try:
                current, _ = pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(i))
            except pynvml.NVMLError:          # not MIG-capable: no MIG to worry about
                continue
            if current:
                return None
        return n
    finally:
        pynvml.nvmlShutdown()


def place(requested: Optional[int] = None, confine: bool = True,
          env: MutableMapping[str, str] = os.environ,
          started: Optional[Callable[[], bool]] = None,
          visible: Optional[Callable[[], Optional[List[str]]]] = None,
          count: Optional[Callable[[], int]] = None,
          counter_file: Optional[str] = None) -> Placement:
    """The GPU of the next model copy (``choose_device``'s round-robin, or ``requested``)
    and, with ``confine``, this process narrowed to it.

    Why narrow: a CUDA call in a thread that never chose a device opens a context on
    device 0, and Beam has no unload hook, so a copy is freed in whatever thread drops it.
    On two H200s every SDK process placed on cuda:1 also held a context on cuda:0 by the
    end of the run (32 processes on GPU 0, 16 on GPU 1; docs/benchmarks.md), and the
    run's tail grew from 11 to 26 s. A lone process did not, with or without an exit hook
    that made its device current, so the call is somewhere in Beam's SDK process; a
    process that sees one GPU cannot make it, whichever it is.

    Narrowing happens only in an SDK process Beam started (``SDK_PROCESS_MARK`` in its
    environment), before CUDA has started there (its device list is fixed then), and with
    one process per copy: with ``model_copies`` Beam loads every copy in one shared
    process, so the loaders get ``confine=False`` there. Later copies in a narrowed
    process share its GPU; asking one of them for another GPU is an error."""
    global _confined
    with _LOCAL:
        if _confined is not None:
            if requested is not None and requested != _confined.device:
                raise ValueError(
                    f"--gpu_device: this process is narrowed to GPU {_confined.device} "
                    f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}); expected "
                    f"{_confined.device}, got {requested}")
            return _confined
        narrow = confine and SDK_PROCESS_MARK in env and not (started or cuda_started)()
        entries = (visible or (lambda: visible_without_cuda(env)))() if narrow else None
        if entries is not None:
            device = choose_device(requested, count=lambda: len(entries),
                                   counter_file=counter_file)
            env["CUDA_VISIBLE_DEVICES"] = entries[device]
            _confined = Placement(device=device, cuda_index=0, confined=True)
            return _confined
    device = choose_device(requested, count=count, counter_file=counter_file)
    return Placement(device=device, cuda_index=device, confined=False)


def place_current(requested: Optional[int] = None, confine: bool = True) -> Placement:
    """``place``, then its device made current in this thread (``set_placed_device``):
    what a loader does before its first CUDA call."""
    placed = place(requested, confine=confine)
    set_placed_device(placed)
    return placed


def set_placed_device(placed: Placement, env: MutableMapping[str, str] = os.environ,
                      set_device: Optional[Callable[[int], None]] = None) -> None:
    """Make the placement's device current in this thread. In a narrowed process a failure
    says so: CUDA then sees only the GPU the narrowing named, and an entry CUDA cannot use
    (NVML counted a GPU that CUDA does not) fails here, not later."""
    if set_device is None:
        from transforms.runtime.cuda import set_device
    try:
        set_device(placed.cuda_index)
    except Exception as exc:
        if not placed.confined:
            raise
        raise type(exc)(f"{exc}; this SDK process was narrowed to GPU {placed.device} "
                        f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}). "
                        f"Set CUDA_VISIBLE_DEVICES to the GPUs CUDA can use, or pass "
                        f"--model_copies to keep every GPU in view") from exc


def visible_count() -> int:
    """GPUs this process can use, where cuda-python may be absent (ONNX Runtime's GPU
    providers need only onnxruntime-gpu): CUDA's count if cuda-python imports, else the
    count found without CUDA (CUDA_VISIBLE_DEVICES or NVML), else 1: device 0, which is
    where ONNX Runtime would have put the session anyway."""
    from transforms.runtime.cuda import cuda_python_available, device_count

    if cuda_python_available():
        return device_count()
    entries = visible_without_cuda()
    return len(entries) if entries is not None else 1
