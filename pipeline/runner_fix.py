"""A fix for Beam's local runner, which loses elements on the way to its SDK processes.

Why: with ``--direct_running_mode=multi_processing`` (or ``multi_threading``) Beam's
FnApiRunner sends each bundle's input to an SDK process over gRPC, through a data stream
that a background thread flushes every second (``DATA_BUFFER_TIME_LIMIT_MS = 1000`` in
``fn_api_runner/worker_handlers.py``; ``TimeBasedBufferingClosableOutputStream`` in
``runners/worker/data_plane.py``). The flush takes the buffer's bytes and then clears the
buffer, under a lock that ``write`` does not take. Bytes the runner writes between those
two steps are cleared without being sent: whole groups of elements vanish, with no error.
Large elements make the window wide (copying tens of MB of encoded images), which is why
it showed on the Pillow side of ``--preprocess gpu``: its input carries each file's bytes
from one stage to the next. Measured (docs/reliability.md): 206 of 10,000 ``uploads``
images lost on the H200; 40 of 600 PNGs in a CPU-only reproduction
(``scripts/repro_runner_loss.py``), where the runner had sent every element and the SDK
processes received fewer.

``apply()`` makes ``write`` take the flush lock, so a flush sends everything written
before it and nothing written after it is cleared. It is applied by the launcher before a
local run; it does nothing where the class already guards its writes (a fixed Beam), and
Dataflow's runner does not use this code.
"""

from __future__ import annotations

from typing import Any


def _has_flush_lock(cls: type) -> bool:
    """The stream sets ``self._flush_lock`` in __init__ (the lock its flush holds)."""
    code = getattr(cls.__init__, "__code__", None)
    return code is not None and "_flush_lock" in code.co_names


def apply() -> bool:
    """Guard writes of Beam's time-flushed data stream; True if the fix was needed."""
    from apache_beam.runners.worker import data_plane

    cls = getattr(data_plane, "TimeBasedBufferingClosableOutputStream", None)
    if cls is None or not _has_flush_lock(cls):
        return False                  # a Beam without this stream, or without its lock
    if "write" in vars(cls):          # already guarded: by an earlier call, or by Beam
        return False

    def write(self: Any, b: bytes, nested: bool = False) -> None:
        with self._flush_lock:
            data_plane.SizeBasedBufferingClosableOutputStream.write(self, b, nested)

    write.__doc__ = "write under the flush lock (pipeline/runner_fix.py)"
    cls.write = write
    return True
