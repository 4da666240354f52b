"""What every benchmark subcommand shares: the cores it may use, number formatting, the
corpus as a glob or a manifest, and the `python -m pipeline.main` command over it."""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Any, Dict, List, Optional, Sequence


def affinity() -> List[int]:
    """The cores this process may run on (taskset, a cgroup), not the machine's: a run
    pinned to 16 of 32 cores must say 16."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))       # not Linux


def usable_cores() -> int:
    return len(affinity())


def _fmt(x: Optional[float], scale: float = 1.0, digits: int = 4) -> str:
    return "–" if x is None else f"{x * scale:.{digits}f}"


def _load_records(paths: Sequence[str]) -> List[Dict[str, Any]]:
    """The JSON records a report combines, in the order given."""
    records = []
    for path in paths:
        with open(path) as f:
            records.append(json.load(f))
    return records


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    """num / den, or None where either is missing, zero or NaN (a run that failed)."""
    ok = all(x is not None and x == x and x != 0 for x in (num, den))
    return round(num / den, 3) if ok else None


def _corpus_glob(a: argparse.Namespace) -> str:
    """The corpus's images (scripts/make_corpus.py names them <corpus_name>-NNNNNN.*)."""
    return os.path.join(a.corpus, f"{a.corpus_name}-*")


def _corpus_files(a: argparse.Namespace) -> List[str]:
    """The corpus's images, sorted: what a run over the corpus scores."""
    return sorted(glob.glob(_corpus_glob(a)))


def _unique_files(a: argparse.Namespace) -> List[str]:
    """The corpus's generated photos without the hard links of ``make_corpus --links``
    (<corpus_name>-lNNNNNNN.*): what DALI alone and the CPU pool ceiling are timed on."""
    return sorted(glob.glob(os.path.join(a.corpus, f"{a.corpus_name}-[0-9]*")))


def _manifest(a: argparse.Namespace) -> str:
    """The corpus's URIs in a manifest file (one per line) beside the corpus, written once:
    the input of a run of millions, as a user would list GCS objects (pipeline.main
    --input_list) rather than have one worker match them."""
    path = os.path.join(a.corpus, "manifest.txt")
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            f.writelines(uri + "\n" for uri in _corpus_files(a))
        os.replace(path + ".tmp", path)
    return path


def _main_command(a: argparse.Namespace, *extra: str) -> List[str]:
    """``python -m pipeline.main`` over the corpus on the plan, batches of exactly --batch
    (the corpus as a glob, or with --manifest as an --input_list)."""
    source = (["--input_list", _manifest(a)] if getattr(a, "manifest", False)
              else ["--input", _corpus_glob(a)])
    return ["-m", "pipeline.main", *source, "--backend", "tensorrt",
            "--engine", a.engine, "--min_batch_size", str(a.batch),
            "--max_batch_size", str(a.batch), *extra]

