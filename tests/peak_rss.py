"""This process's own peak resident memory, for the child processes tests start.

Why /proc's VmHWM: it belongs to the process's memory after exec. ru_maxrss keeps the
peak of the forking parent (Linux carries it across exec), so after a test that grew
pytest to 2 GB a child reported 2,156 MB it never used.
"""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
