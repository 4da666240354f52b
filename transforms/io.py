"""Every output file through Beam's own file transforms, and reading them back.

Why Beam's sinks: WriteToText/WriteToParquet write to temporary files and finalize
them once, so a retried bundle never produces a second copy of a record.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


PREDICTIONS = "predictions"
ERRORS = "errors"
BUNDLES = "bundles"


def uris_in(path: str) -> Iterator[str]:
    """The URIs in one output file: predictions or dead letters, JSONL or Parquet."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            yield from pq.read_table(f, columns=["uri"]).column("uri").to_pylist()
            return
        for line in f.read().decode("utf-8").splitlines():
            if line.strip():
                yield json.loads(line)["uri"]


def predictions_patterns(prefixes: Sequence[str]) -> List[str]:
    """``<prefix>/predictions-*`` for each prefix: every run's prediction files there."""
    return [FileSystems.join(p, PREDICTIONS) + "-*" for p in prefixes]


def matching_paths(pattern: str) -> Tuple[str, ...]:
    """Every path matching ``pattern``, local or gs://, sorted (none is fine)."""
    return tuple(sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list))

def to_json(record: Dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


PREDICTION_SCHEMA = pa.schema([
    ("uri", pa.string()),
    ("top_k", pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))),
    ("model_name", pa.string()),
    ("model_sha256", pa.string()),
    ("backend", pa.string()),
    ("batch_size", pa.int64()),
    ("decode_ms", pa.float64()),
    ("preprocess_ms", pa.float64()),
    ("inference_ms", pa.float64()),
])


def file_prefix(output: str, name: str, run_id: str) -> str:
    """<output>/<name>-<run_id>: each run writes its own files under one prefix."""
    return FileSystems.join(output, f"{name}-{run_id}")


def _part(prefix: str, part: str) -> str:
    return f"{prefix}-{part}" if part else prefix


class WriteJsonl(beam.PTransform):
    """Dict records -> <output>/<name>-<run_id>[-<part>]-SSSSS-of-NNNNN.jsonl.

    ``part`` names one of several sinks of the same output (one per pipeline branch);
    readers match ``<name>-<run_id>-*`` and see them all."""

    name_prefix = ""

    def __init__(self, output: str, run_id: str, name_prefix: Optional[str] = None,
                 part: str = "") -> None:
        super().__init__()
        self._output = output
        self._name = _part(file_prefix(output, name_prefix or self.name_prefix, run_id), part)

    def expand(self, pcoll: beam.PCollection) -> Any:
        return (pcoll
                | "ToJson" >> beam.Map(to_json)
                | "Write" >> beam.io.WriteToText(self._name, file_name_suffix=".jsonl"))


class WritePredictions(beam.PTransform):
    """Prediction records -> <output>/predictions-*.jsonl or .parquet."""

    def __init__(self, output: str, run_id: str, output_format: str = "jsonl",
                 part: str = "") -> None:
        super().__init__()
        self._output = output
        self._run_id = run_id
        self._format = output_format
        self._part = part

    def expand(self, pcoll: beam.PCollection) -> Any:
        if self._format == "parquet":
            return pcoll | "Write" >> beam.io.WriteToParquet(
                _part(file_prefix(self._output, PREDICTIONS, self._run_id), self._part),
                PREDICTION_SCHEMA, file_name_suffix=".parquet")
        return pcoll | WriteJsonl(self._output, self._run_id, PREDICTIONS, self._part)


class WriteDeadLetters(WriteJsonl):
    """Dead-letter records -> <output>/errors-*.jsonl."""

    name_prefix = ERRORS


class WriteBundleMetrics(WriteJsonl):
    """Per-bundle timing records -> <output>/bundles-*.jsonl."""

    name_prefix = BUNDLES


def read_jsonl(pattern: str) -> Iterator[Dict[str, Any]]:
    """Every record in the files matching ``pattern`` (local or gs://)."""
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for line in f.read().decode("utf-8").splitlines():
                if line.strip():
                    yield json.loads(line)
