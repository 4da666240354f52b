"""Every image that enters a run leaves it once: as a prediction or as a dead letter.

Why a check of its own: the failure budget compares ok with failed, but an image that
vanished between the two is in neither, and a run that lost images would otherwise end
"ok". On the H200 a 50,000-image run on the GPU path with 16 SDK processes wrote 48,620
predictions, no dead letters, and exited 0 (docs/reliability.md). So after every run the
launcher compares the URIs admitted (after the anti-join) with ok + failed, from the
run's own counters, and fails with exit status 4 when they differ, naming the command
that lists the missing images (``python -m pipeline.audit``). A rerun to the same
--output scores exactly the missing ones.
"""

from __future__ import annotations

import shlex
from typing import Optional, Sequence

EXIT_UNACCOUNTED = 4


class ImagesUnaccounted(RuntimeError):
    """ok + failed differs from the images the run admitted; the message says by how much
    and how to find them."""


def audit_command(inputs: Sequence[str], input_list: Optional[str], output: str,
                  run_id: str) -> str:
    """The ``python -m pipeline.audit`` line that names a run's missing images."""
    args = [f"--input {shlex.quote(i)}" for i in inputs]
    if input_list:
        args.append(f"--input_list {shlex.quote(input_list)}")
    return (f"python -m pipeline.audit {' '.join(args)} --output {shlex.quote(output)} "
            f"--run_id {shlex.quote(run_id)}")


def check_accounting(admitted: int, ok: int, failed: int, inputs: Sequence[str],
                     input_list: Optional[str], output: str, run_id: str) -> None:
    """Raise ImagesUnaccounted unless ``admitted == ok + failed``."""
    done = ok + failed
    if admitted == done:
        return
    audit = audit_command(inputs, input_list, output, run_id)
    if done < admitted:
        raise ImagesUnaccounted(
            f"{admitted - done} of {admitted} images admitted to run {run_id} are in neither "
            f"the predictions nor the dead letters (ok={ok} failed={failed}); expected "
            f"ok + failed = {admitted}. The run's outputs are incomplete. List them with: "
            f"{audit}. Running the same command again to the same --output scores only the "
            f"missing ones.")
    raise ImagesUnaccounted(
        f"ok + failed = {done} but run {run_id} admitted {admitted} images: "
        f"{done - admitted} outcomes more than images (an image scored or dead-lettered "
        f"twice). Check with: {audit}")
