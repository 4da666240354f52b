"""`python -m pipeline.compare A B`: how far two runs' scores are apart, image by image.

Why: choosing a precision (fp16 or fp32), a backend (TensorRT or ONNX Runtime) or the
preprocessing path (DALI on the GPU or Pillow on the CPU) is a trade of speed against
scores, and the speed side has its benchmark. This is the other side: two runs over the
same images, joined by URI, and the distribution of the score differences per label.

    python -m pipeline.compare out/fp32 out/fp16 [--label nsfw] [--max_diff 0.02] [--json F]

It prints a table (images compared, median, p99 and max absolute difference per label,
top-1 agreement) and exits 1 when a label's max difference is above --max_diff, 0 otherwise.
URIs in only one run are counted and named, not compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms.io import PREDICTIONS, read_jsonl


def scores(output: str) -> Dict[str, Dict[str, float]]:
    """URI -> {label: score} from every predictions-*.jsonl file under ``output``."""
    pattern = FileSystems.join(output, PREDICTIONS) + "-*.jsonl"
    return {r["uri"]: {t["label"]: float(t["score"]) for t in r["top_k"]}
            for r in read_jsonl(pattern)}


def compare(a: Dict[str, Dict[str, float]], b: Dict[str, Dict[str, float]],
            labels: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Per-label |a - b| over the URIs both runs scored (labels both runs report)."""
    common = sorted(set(a) & set(b))
    if labels is None:
        labels = sorted({k for u in common for k in a[u]} & {k for u in common for k in b[u]})
    out: Dict[str, Any] = {
        "images": len(common), "only_in_a": len(set(a) - set(b)),
        "only_in_b": len(set(b) - set(a)),
        "examples_only_in_a": sorted(set(a) - set(b))[:5],
        "examples_only_in_b": sorted(set(b) - set(a))[:5], "labels": {}}
    if common:
        top_a = [max(a[u], key=a[u].get) for u in common]
        top_b = [max(b[u], key=b[u].get) for u in common]
        out["top1_agreement"] = round(float(np.mean([x == y for x, y in zip(top_a, top_b)])), 6)
    for label in labels:
        pairs = [(u, a[u][label], b[u][label]) for u in common
                 if label in a[u] and label in b[u]]
        if not pairs:
            continue
        diff = np.abs(np.array([x - y for _, x, y in pairs]))
        worst = int(np.argmax(diff))
        out["labels"][label] = {
            "images": len(pairs), "median": float(np.median(diff)),
            "p99": float(np.percentile(diff, 99)), "max": float(diff.max()),
            "worst_uri": pairs[worst][0]}
    return out


def table(result: Dict[str, Any]) -> str:
    rows = [f"{'label':<16} {'images':>7} {'median':>10} {'p99':>10} {'max':>10}  worst"]
    for label, s in result["labels"].items():
        rows.append(f"{label:<16} {s['images']:>7} {s['median']:>10.2e} {s['p99']:>10.2e} "
                    f"{s['max']:>10.2e}  {s['worst_uri']}")
    rows.append(f"compared {result['images']} images; top-1 agreement "
                f"{result.get('top1_agreement', float('nan')):.4f}; only in A: "
                f"{result['only_in_a']}, only in B: {result['only_in_b']}")
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="--output of the first run")
    ap.add_argument("b", help="--output of the second run")
    ap.add_argument("--label", action="append", default=None,
                    help="compare this label only (repeatable); default: every label")
    ap.add_argument("--max_diff", type=float, default=None,
                    help="exit 1 if any compared label's max |difference| is above this")
    ap.add_argument("--json", default=None, help="write the result here as JSON")
    args = ap.parse_args(argv)
    a, b = scores(args.a), scores(args.b)
    if not a or not b:
        empty = args.a if not a else args.b
        print(f"error: no predictions-*.jsonl records under {empty}; expected a finished "
              f"run's --output", file=sys.stderr)
        return 2
    result = compare(a, b, args.label)
    result.update(a=args.a, b=args.b, max_diff_allowed=args.max_diff)
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    over: List[str] = [k for k, s in result["labels"].items()
                       if args.max_diff is not None and s["max"] > args.max_diff]
    if over:
        print(f"error: max |difference| above {args.max_diff} for {over}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
