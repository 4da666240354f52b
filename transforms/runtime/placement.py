"""Which GPU a model copy goes to: round-robin over the visible devices, or one named.

Why a cross-process counter: Dataflow workers with 2, 4 or 8 GPUs run several SDK
processes (or several ``model_copies`` in one process), and each one loads its own
engine. Without placement every engine lands on device 0. The counter lives in a small
file under the temp directory, guarded by an exclusive flock, so the k-th copy loaded
on a VM goes to device k mod N whichever process loads it. ``--gpu_device N`` pins every
copy to one device instead.

The thread that ends the process matters too: see ``hold_exit_device``.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import tempfile
import threading
from typing import Callable, Optional

_LOCAL = threading.Lock()
_exit_device: Optional[int] = None     # the device held for the process's exit, once set
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


def hold_exit_device(device: int, set_device: Optional[Callable[[int], None]] = None) -> bool:
    """At exit, make ``device`` current in the thread that ends the process (the first
    device this process placed a copy on); True if registered now.

    Why: Beam has no unload hook, so a model's objects are freed as the SDK process exits,
    in its main thread, and DALI's pools by C++ static destructors after that. That thread
    never set a device, so its CUDA device is 0, and a free there can create a context on
    cuda:0. On the two-H200 machine each of the 16 processes placed on cuda:1 opened about
    500 MiB on cuda:0 in its last seconds, and on no step before (nvidia-smi every 2 s,
    scripts/device_contexts.py; docs/benchmarks.md); the run's tail grew from 9.4 s on
    one GPU to 21.8 s. With the placed device current there, the frees use the context
    the process already has."""
    global _exit_device
    if set_device is None:
        from transforms.runtime.cuda import set_device
    with _LOCAL:
        if _exit_device is not None:
            return False
        _exit_device = device

    def on_exit() -> None:
        try:
            set_device(device)
        except Exception:  # noqa: BLE001 - CUDA may be torn down already; nothing to keep
            pass

    atexit.register(on_exit)
    return True
