"""Which stage of Beam's local runner the wall time goes to, bundle by bundle.

Why: on the H200 a 50,000-image GPU-path run spent 14.7 s after its last scored batch
and 12.6 s before the main stage reached the SDK processes (docs/benchmarks.md,
2026-11-30). The per-process milestones (transforms/runtime/startup.py) see the workers;
this sees the runner, which executes one stage at a time: each ``_execute_bundle`` call
is one stage's bundle, split over the SDK processes. Recording them gives a stage table
from a real run, not a guess.

Off unless ``BEAM_TRT_STARTUP_DIR`` is set (``python -m pipeline.benchmark`` sets it);
then the launcher appends one ``stage`` milestone per bundle (name, start, seconds) to
its startup file; ``startup.summarize`` makes them a table (``runner_stages``).
Feature-guarded: does nothing on a runner without ``_execute_bundle``.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, List

from transforms.runtime import startup


def short_name(stage: str, keep: int = 3) -> str:
    """Beam's fused stage names list every transform, ``((ref_AppliedPTransform_A-b_12)+
    (ref_AppliedPTransform_C_13)+(D/Write))``: keep the distinct top-level labels, the
    first ``keep`` of them (and RunInference, wherever it is), then a count."""
    labels: List[str] = []
    for part in stage.split(")+("):
        part = part.strip("()").replace("ref_AppliedPTransform_", "")
        part = re.sub(r"_\d+$", "", part)
        label = re.split(r"[-/]", part, maxsplit=1)[0]
        if label and not label.startswith("ref_PCollection") and label not in labels:
            labels.append(label)
    shown = labels[:keep]
    if "RunInference" in labels[keep:]:      # the stage that scores: always named
        shown.append("RunInference")
    more = f" +{len(labels) - len(shown)}" if len(labels) > len(shown) else ""
    return ", ".join(shown) + more


def apply() -> bool:
    """Wrap the local runner's bundle execution; True if it was wrapped now."""
    if not os.environ.get(startup.ENV):
        return False
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    runner = getattr(fn_runner, "FnApiRunner", None)
    original = getattr(runner, "_execute_bundle", None)
    if original is None or getattr(original, "_timed", False):
        return False

    def _execute_bundle(self: Any, context: Any, bundle_manager: Any, bundle_input: Any) -> Any:
        start = time.time()
        try:
            return original(self, context, bundle_manager, bundle_input)
        finally:
            name = getattr(getattr(bundle_manager, "stage", None), "name", "?")
            startup.record("stage", once=False, stage=short_name(name), stage_id=name[-120:],
                           start=round(start, 3),
                           seconds=round(time.time() - start, 3))

    _execute_bundle._timed = True          # type: ignore[attr-defined]
    runner._execute_bundle = _execute_bundle
    return True

