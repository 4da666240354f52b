"""Fuzz the decoder at full size: N mutated files (tests/fuzz_images.py), decoded and
preprocessed in a child under a 3 GB address-space cap; prints a table per format x
mutation and writes JSON. The CI share (2,000 files, plus a pipeline run over them) is
tests/test_fuzz.py.

    python scripts/fuzz_decode.py --count 20000 --seed 1 --json out/fuzz.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fuzz_images import decode_in_child, write_corpus  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_corpus(Path(tmp), args.count, args.seed)
        start = time.perf_counter()
        records = []
        for i in range(0, len(paths), 1000):       # argv stays short
            records += decode_in_child(paths[i:i + 1000], timeout_s=600)
        wall = time.perf_counter() - start
    table = collections.defaultdict(collections.Counter)
    for r in records:
        _, fmt_kind = r["file"].split("_", 1)
        table[fmt_kind][r["outcome"]] += 1
    outcomes = sorted({o for c in table.values() for o in c})
    print(f"{'format_mutation':32s}" + "".join(f"{o:>18s}" for o in outcomes))
    for key in sorted(table):
        print(f"{key:32s}" + "".join(f"{table[key][o]:18d}" for o in outcomes))
    report = {"count": args.count, "seed": args.seed, "files_reported": len(records),
              "lost": args.count - len(records), "wall_s": round(wall, 1),
              "max_seconds_per_image": max(r["seconds"] for r in records),
              "peak_rss_mb": max(r["peak_rss_mb"] for r in records),
              "outcomes": dict(collections.Counter(r["outcome"] for r in records)),
              "machine": f"{os.cpu_count()} cores"}
    print(json.dumps(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["lost"] == 0 and "MemoryError" not in report["outcomes"] else 1


if __name__ == "__main__":
    sys.exit(main())
