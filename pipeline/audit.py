"""`python -m pipeline.audit`: did every input image come out exactly once?

Why: "every image scored exactly once" is the product's promise, and a run's own counters
cannot prove it (a counter counts what reached it, not what never did). This reconciles a
finished run's outputs against its inputs, by URI: each input must appear in the
predictions or the dead letters, once, and nothing else may appear there.

    python -m pipeline.audit --input 'gs://bucket/images/*' --output gs://bucket/scores \
        [--run_id RUN_ID] [--json audit.json]

It exits 0 when the run is whole, 4 when images are missing or written twice, and names
them (the first few, with their format, mode, size and JPEG frame type, so a pattern in
what went missing shows at once).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.io import ERRORS, PREDICTIONS, file_prefix, uris_in

EXIT_NOT_WHOLE = 4


def input_uris(patterns: Sequence[str], input_list: Optional[str] = None) -> List[str]:
    """Every file the globs match and the manifest names, once (as the run admits them)."""
    from transforms.manifest import manifest_file_uris

    uris = set()
    for result in FileSystems.match(list(patterns)) if patterns else []:
        uris.update(m.path for m in result.metadata_list)
    if input_list:
        uris.update(manifest_file_uris(input_list))
    return sorted(uris)


def output_uris(output: str, name: str, run_id: Optional[str]) -> Counter:
    """How often each URI appears in ``<output>/<name>[-<run_id>]-*`` (JSONL or Parquet)."""
    prefix = file_prefix(output, name, run_id) if run_id else FileSystems.join(output, name)
    counts: Counter = Counter()
    for match in FileSystems.match([prefix + "-*"])[0].metadata_list:
        counts.update(uris_in(match.path))
    return counts


def describe(uri: str) -> Dict[str, Any]:
    """What a file is, from its header: enough to see what a set of missing files share."""
    from PIL import Image

    from transforms.jpeg_structure import check_jpeg_structure

    facts: Dict[str, Any] = {"uri": uri}
    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read()
        facts["bytes"] = len(data)
        import io

        with Image.open(io.BytesIO(data)) as img:
            facts.update(format=img.format, mode=img.mode, size=list(img.size),
                         progressive=bool(img.info.get("progressive")),
                         exif_orientation=img.getexif().get(0x0112))
        if facts["format"] == "JPEG":
            facts["sof"] = hex(check_jpeg_structure(data))
    except Exception as exc:  # noqa: BLE001 - the audit reports what it could not read
        facts["error"] = f"{type(exc).__name__}: {exc}"
    return facts


def audit(patterns: Sequence[str], output: str, run_id: Optional[str] = None,
          examples: int = 20, input_list: Optional[str] = None) -> Dict[str, Any]:
    """Inputs against predictions and dead letters, by URI."""
    inputs = input_uris(patterns, input_list)
    scored = output_uris(output, PREDICTIONS, run_id)
    failed = output_uris(output, ERRORS, run_id)
    seen = scored + failed
    missing = [u for u in inputs if u not in seen]
    twice = sorted(u for u, n in seen.items() if n > 1)
    known = set(inputs)
    unknown = sorted(u for u in seen if u not in known)
    described = [describe(u) for u in missing[:max(examples, 500)]]   # each file read once
    report = {
        "inputs": len(inputs), "predictions": sum(scored.values()),
        "dead_letters": sum(failed.values()), "missing": len(missing),
        "written_more_than_once": len(twice), "not_an_input": len(unknown),
        "whole": not (missing or twice or unknown),
        "missing_examples": described[:examples],
        "written_more_than_once_examples": twice[:examples],
        "not_an_input_examples": unknown[:examples],
    }
    if missing:
        kinds = Counter((d.get("format"), d.get("mode"), d.get("sof"), d.get("progressive"))
                        for d in described[:500])
        report["missing_kinds"] = [{"format": k[0], "mode": k[1], "sof": k[2],
                                    "progressive": k[3], "count": n}
                                   for k, n in kinds.most_common()]
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.audit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", action="append", default=[],
                    help="the run's input glob (repeatable)")
    ap.add_argument("--input_list", help="the run's manifest of URIs")
    ap.add_argument("--output", required=True, help="the run's --output prefix")
    ap.add_argument("--run_id", help="only this run's files (default: every run's)")
    ap.add_argument("--json", help="write the report here")
    a = ap.parse_args(argv)
    if not a.input and not a.input_list:
        ap.error("expected --input GLOB or --input_list FILE (the run's inputs), got neither")
    report = audit(a.input, a.output, a.run_id, input_list=a.input_list)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    print(f"audit: inputs={report['inputs']} predictions={report['predictions']} "
          f"dead_letters={report['dead_letters']} missing={report['missing']} "
          f"written_more_than_once={report['written_more_than_once']} "
          f"not_an_input={report['not_an_input']}")
    if report["whole"]:
        return 0
    for d in report["missing_examples"][:5]:
        print(f"  missing: {json.dumps(d)}", file=sys.stderr)
    for u in report["written_more_than_once_examples"][:5]:
        print(f"  written more than once: {u}", file=sys.stderr)
    for k in report.get("missing_kinds", [])[:5]:
        print(f"  missing kind: {json.dumps(k)}", file=sys.stderr)
    return EXIT_NOT_WHOLE


if __name__ == "__main__":
    sys.exit(main())
