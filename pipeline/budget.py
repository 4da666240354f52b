"""The failure budget: a run that fails for too many images fails, and says where to look.

Why: a scheduled job over a bucket of images reports success as long as the pipeline
finishes, even when a spec that does not fit, or a bucket of formats the decoder refuses,
turned nearly every image into a dead letter. After the run (and after every output is
written in full), the launcher compares the counts with ``--max_failed_fraction`` and
``--max_failed`` and exits non-zero with the counts, the errors output and the three most
common error types, each with one example URI.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Tuple

from transforms.io import read_jsonl


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
