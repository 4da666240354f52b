"""What is done to Beam's local runner before every run this project launches.

One place, because the launcher, the stock-handler baseline (which must run on the same
runner as ours) and scripts/read_join_cost.py all need the same three: the fix for its
lost elements (runner_fix), its SDK processes stopped together (runner_shutdown), and its
stage table when start-up is timed (stage_timeline). Each is feature-guarded, applies
once, and leaves Dataflow's runner alone.
"""

from __future__ import annotations

from pipeline import runner_fix, runner_shutdown, stage_timeline

LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner",
                 "FnApiRunner", "PrismRunner")


def is_local(runner: object) -> bool:
    """Whether ``runner`` (a name or a runner object) is one of Beam's local runners."""
    return str(runner).split(".")[-1] in LOCAL_RUNNERS


def prepare() -> None:
    runner_fix.apply()           # Beam's local runner loses elements without it
    runner_shutdown.apply()      # its SDK processes stopped together, not in turn
    stage_timeline.apply()       # a stage table, when start-up is being timed
