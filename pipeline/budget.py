"""The failure budget: a run that fails for too many images fails, and says where to look.

Why: a scheduled job over a bucket of images reports success as long as the pipeline
finishes, even when a spec that does not fit, or a bucket of formats the decoder refuses,
turned nearly every image into a dead letter. After the run (and after every output is
written in full), the launcher compares the counts with ``--max_failed_fraction`` and
``--max_failed`` and exits non-zero with the counts, the errors output and the three most
common error types, each with one example URI.

A flex-template launcher returns as soon as the job is submitted, so nothing waits to
compare. For those jobs the same check runs afterwards from the outputs themselves:

    python -m pipeline.budget --output gs://bucket/scores --run_id 20261125-0100-ab12

counts the run's predictions and dead letters and exits 3 when over budget, like the
launcher with --wait_until_finish.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.io import ERRORS, PREDICTIONS, file_prefix, read_jsonl


class FailureBudgetExceeded(RuntimeError):
    """More images failed than the run allows; the message says how many and why."""


def top_error_types(errors_glob: str, n: int = 3) -> List[Tuple[str, int, str]]:
    """(error_type, count, example URI) of the ``n`` most common dead-letter types."""
    counts: Counter = Counter()
    example: Dict[str, str] = {}
    for record in read_jsonl(errors_glob):
        kind = f"{record.get('stage', '?')}/{record.get('error_type', '?')}"
        counts[kind] += 1
        example.setdefault(kind, record.get("uri", "?"))
    return [(kind, count, example[kind]) for kind, count in counts.most_common(n)]


def check_failure_budget(ok: int, failed: int, max_fraction: float, max_failed: Optional[int],
                         errors_glob: str) -> None:
    """Raise FailureBudgetExceeded when ``failed`` is over either limit."""
    total = ok + failed
    fraction = failed / total if total else 0.0
    over = []
    if fraction > max_fraction:
        over.append(f"{fraction:.1%} of images failed; expected at most {max_fraction:.1%} "
                    "(--max_failed_fraction)")
    if max_failed is not None and failed > max_failed:
        over.append(f"{failed} images failed; expected at most {max_failed} (--max_failed)")
    if not over:
        return
    lines = [f"failure budget exceeded: {'; '.join(over)}. ok={ok} failed={failed}. "
             f"Dead letters: {errors_glob}"]
    for kind, count, uri in top_error_types(errors_glob):
        lines.append(f"  {count} x {kind}, e.g. {uri}")
    raise FailureBudgetExceeded("\n".join(lines))


def count_records(pattern: str) -> int:
    """Records in the finished files matching ``pattern``: JSONL lines or Parquet rows
    (one listing; each file opened once, nothing parsed beyond Parquet's footer)."""
    total = 0
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            if match.path.endswith(".parquet"):
                import pyarrow.parquet as pq

                total += pq.ParquetFile(f).metadata.num_rows
            else:
                total += sum(1 for line in f.read().splitlines() if line.strip())
    return total


def check_outputs(output: str, run_id: str, max_fraction: float,
                  max_failed: Optional[int]) -> Tuple[int, int]:
    """The budget from a finished run's files; returns (ok, failed) or raises."""
    ok = count_records(file_prefix(output, PREDICTIONS, run_id) + "-*")
    errors_glob = file_prefix(output, ERRORS, run_id) + "-*.jsonl"
    failed = count_records(errors_glob)
    if ok + failed == 0:
        raise FailureBudgetExceeded(
            f"no predictions or dead letters for run {run_id!r} under {output}; expected "
            f"{file_prefix(output, PREDICTIONS, run_id)}-* from a finished run")
    check_failure_budget(ok, failed, max_fraction, max_failed, errors_glob)
    return ok, failed


def main(argv: Optional[Sequence[str]] = None) -> int:
    from pipeline.config import RunConfig

    ap = argparse.ArgumentParser(prog="python -m pipeline.budget",
                                 description="Apply the failure budget to a finished run's "
                                             "outputs (for jobs nothing waited on).")
    ap.add_argument("--output", required=True, help="The run's --output prefix.")
    ap.add_argument("--run_id", required=True, help="The run's --run_id.")
    ap.add_argument("--max_failed_fraction", type=float, default=RunConfig.max_failed_fraction)
    ap.add_argument("--max_failed", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        ok, failed = check_outputs(args.output, args.run_id, args.max_failed_fraction,
                                   args.max_failed)
    except FailureBudgetExceeded as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(f"within budget: ok={ok} failed={failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
