"""Every image that enters a run leaves it once: as a prediction or as a dead letter.

Why a check of its own: the failure budget compares ok with failed, but an image that
vanished between the two is in neither, and a run that lost images would otherwise end
"ok". On the H200 a 50,000-image run on the GPU path with 16 SDK processes wrote 48,620
predictions, no dead letters, and exited 0 (docs/reliability.md). So after every run the
launcher compares the URIs admitted (after the anti-join) with ok + failed, from the
run's own counters, and fails with exit status 4 when they differ, naming the command
that lists the missing images (``python -m pipeline.audit``). A rerun to the same
--output scores exactly the missing ones.

The counters see an image before Beam's file sink writes it (``images_ok`` is counted
just before WritePredictions), so a record lost in the sink's finalize step would
still balance. The launcher therefore also counts the records the run's finished files
hold (``count_written``) and checks them against ok and failed, and lists any temporary
files a sink left unfinalized (``beam-temp-*``): that names the stage where images went
missing, counters or files.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from pipeline.budget import count_records
from transforms.io import ERRORS, PREDICTIONS, file_prefix, matching_paths

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


@dataclass(frozen=True)
class Written:
    """What a finished run's files hold: records per output, and sink temp files left."""

    predictions: int
    dead_letters: int
    unfinalized: Tuple[str, ...] = ()


def count_written(output: str, run_id: str) -> Written:
    """Records in ``<output>/predictions-<run_id>-*`` and ``errors-<run_id>-*``, and the
    files under Beam's ``beam-temp-*-<run_id>*`` folders (a finished sink removes its
    folder, so any file there was written and never finalized)."""
    left = matching_paths(FileSystems.join(output, f"beam-temp-*-{run_id}*") + "/*")
    return Written(count_records(file_prefix(output, PREDICTIONS, run_id) + "-*"),
                   count_records(file_prefix(output, ERRORS, run_id) + "-*"), left)


def check_written(ok: int, failed: int, written: Written, inputs: Sequence[str],
                  input_list: Optional[str], output: str, run_id: str) -> None:
    """Raise ImagesUnaccounted unless the files hold exactly ok predictions and failed
    dead letters: the counters balanced, so a difference here happened in the sinks."""
    if written.predictions == ok and written.dead_letters == failed:
        return
    left = (f" {len(written.unfinalized)} sink temporary file(s) were never finalized, "
            f"e.g. {list(written.unfinalized[:3])}." if written.unfinalized else "")
    raise ImagesUnaccounted(
        f"run {run_id}'s files hold {written.predictions} predictions and "
        f"{written.dead_letters} dead letters; expected {ok} and {failed}, as its counters "
        f"(images_ok, images_failed) say. Records were lost or duplicated after they were "
        f"counted, in the file sinks.{left} List the images with: "
        f"{audit_command(inputs, input_list, output, run_id)}")
