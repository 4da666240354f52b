"""Reading images and writing every output through Beam's own file transforms.

Why Beam's sinks: WriteToText/WriteToParquet write to temporary files and finalize
them once, so a retried bundle never produces a second copy of a record.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.spec import DecodeLimits
from transforms.decode import ImageTooLarge, check_size
from transforms.records import DEAD_LETTER, METRICS_NAMESPACE, Item, PerImageStageFn
from transforms.runtime import startup

PREDICTIONS = "predictions"
ERRORS = "errors"
BUNDLES = "bundles"


def manifest_uri(line: str) -> Optional[str]:
    """One URI per line; blank lines and '#' comments are skipped."""
    line = line.strip()
    return None if not line or line.startswith("#") else line


def manifest_uris(readable: fileio.ReadableFile) -> Iterator[str]:
    """Every URI of a manifest file, streamed (a gzip manifest is decompressed by its
    extension). Why not ReadFromText: its per-line range tracking cost about 8 us a line
    here, and on Beam's local runner the manifest is read before any image is scored."""
    with readable.open() as f:
        for raw in iter(f.readline, b""):     # Beam's CompressedFile has readline, no __iter__
            uri = manifest_uri(raw.decode("utf-8"))
            if uri:
                yield uri


class NotFound(FileNotFoundError):
    """The file was listed (or named in the manifest) but is not there when read."""


def _is_not_found(exc: BaseException) -> bool:
    # google.api_core.exceptions.NotFound is matched by name so local runs need no google.
    return isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NotFound"


class ReadBytes(PerImageStageFn):
    """DoFn: URI -> Item(uri, bytes), reading at most max_bytes + 1 so a huge file is
    refused without being held in memory.

    Transient storage faults are retried below this DoFn, by the machinery Beam already
    uses: GcsIO reads through google-cloud-storage's ``DEFAULT_RETRY`` (429, 5xx,
    connection resets and urllib3 timeouts; exponential backoff from 1 s, doubling to
    60 s, 120 s deadline), for the metadata lookup and for every media request. What
    still fails after that is this image's dead letter (stage ``read``), retried by the
    next run; a file deleted after listing is ``NotFound`` with its URI.
    """

    stage = "read"

    def __init__(self, limits: DecodeLimits) -> None:
        super().__init__()
        self._limits = limits

    def apply(self, item: Item) -> bytes:
        startup.record("first_read")
        try:
            with FileSystems.open(item.uri,
                                  compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read(self._limits.max_bytes + 1)
        except Exception as exc:  # noqa: BLE001 - filesystems raise several types
            if _is_not_found(exc):
                raise NotFound(f"{item.uri}: not there when read (deleted after it was "
                               f"listed, or a manifest entry that does not exist); "
                               f"{type(exc).__name__}: {str(exc)[:200]}") from exc
            raise
        if len(data) > self._limits.max_bytes:
            raise ImageTooLarge(
                f"file has more than {self._limits.max_bytes} bytes; expected at most "
                f"{self._limits.max_bytes}")
        check_size(len(data), self._limits)
        return data


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


def scored_uris(readable: fileio.ReadableFile) -> Iterator[str]:
    """The URIs in one earlier predictions file (JSONL or Parquet)."""
    yield from uris_in(readable.metadata.path)


def predictions_patterns(prefixes: Sequence[str]) -> List[str]:
    """``<prefix>/predictions-*`` for each prefix: every run's prediction files there."""
    return [FileSystems.join(p, PREDICTIONS) + "-*" for p in prefixes]


def matching_paths(pattern: str) -> Tuple[str, ...]:
    """Every path matching ``pattern``, local or gs://, sorted (none is fine)."""
    return tuple(sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list))


class ScoredUris(beam.PTransform):
    """URIs already in ``<prefix>/predictions-*`` for each prefix (none is fine)."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        super().__init__()
        self._prefixes = tuple(prefixes)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "Patterns" >> beam.Create(predictions_patterns(self._prefixes))
                | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
                | "Open" >> fileio.ReadMatches()
                | "Uris" >> beam.FlatMap(scored_uris))


def any_predictions(prefixes: Sequence[str]) -> bool:
    """Whether any ``<prefix>/predictions-*`` exists, when the graph is built. If the
    listing fails, say yes: the anti-join then reads the prefixes as before."""
    patterns = predictions_patterns(prefixes)
    if not patterns:
        return False
    try:
        return any(m.metadata_list for m in FileSystems.match(patterns, [1] * len(patterns)))
    except Exception:  # noqa: BLE001 - see the docstring
        return True


class _NewOnce(beam.DoFn):
    """(uri, [True for each listing, False for each earlier prediction]) -> uri once,
    unless already scored."""

    def __init__(self) -> None:
        self._skipped = Metrics.counter(METRICS_NAMESPACE, "images_skipped")
        # every image admitted here must end as images_ok or images_failed: the launcher
        # checks that balance (pipeline/accounting.py)
        self._admitted = Metrics.counter(METRICS_NAMESPACE, "images_admitted")

    def process(self, element: Tuple[str, Iterable[bool]]) -> Iterator[str]:
        uri, listed = element
        listed = list(listed)
        if not any(listed):                  # only in earlier predictions
            return
        if not all(listed):                  # listed, and scored by an earlier run
            self._skipped.inc()
            return
        self._admitted.inc()
        startup.record("first_admitted")
        yield uri


class AdmittedUris(beam.PTransform):
    """Globs and/or a manifest -> each URI once, unless already scored under
    ``skip_prefixes``: one GroupByKey, which also spreads the URIs across workers."""

    def __init__(self, patterns: Sequence[str], input_list: Optional[str],
                 skip_prefixes: Sequence[str] = ()) -> None:
        super().__init__()
        self._patterns = tuple(patterns)
        self._input_list = input_list
        self._skip = tuple(skip_prefixes)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        sources = []
        for i, pattern in enumerate(self._patterns):
            sources.append(
                pbegin
                | f"Match[{i}]" >> fileio.MatchFiles(pattern)
                | f"Path[{i}]" >> beam.Map(lambda m: m.path))
        if self._input_list:
            sources.append(
                pbegin
                | "ManifestPath" >> beam.Create([self._input_list])
                | "MatchManifest" >> fileio.MatchAll()
                | "OpenManifest" >> fileio.ReadMatches()
                | "ParseManifest" >> beam.FlatMap(manifest_uris))
        # one GroupByKey of (uri, listed?) pairs, typed so Beam picks compact coders: the
        # anti-join and the dedup in one shuffle. (A CoGroupByKey does the same with a tag
        # step per element and per group; this shuffle runs before any scoring on Beam's
        # local runner, so its cost per URI caps a run's images/s.)
        new = (sources | "AllUris" >> beam.Flatten()
               | "KeyNew" >> beam.Map(lambda u: (u, True)).with_output_types(Tuple[str, bool]))
        listings = new
        if any_predictions(self._skip):
            scored = (pbegin | "Scored" >> ScoredUris(self._skip)
                      | "KeyScored" >> beam.Map(lambda u: (u, False)).with_output_types(
                          Tuple[str, bool]))
            # Beam's local runner does not fuse a Flatten of two inputs: it copies every
            # URI once more in a stage of its own (4.5 us per URI on my machine), so it
            # is only there when an earlier run left predictions to skip
            listings = (new, scored) | "Listings" >> beam.Flatten()
        return (listings
                | "Join" >> beam.GroupByKey()
                | "NewOnce" >> beam.ParDo(_NewOnce()))


class ReadImages(beam.PTransform):
    """Globs and/or a manifest -> URIs not yet scored, once each -> Item(uri, bytes).

    URIs listed twice (overlapping globs, a manifest listing a file twice) and URIs
    already in the predictions under ``skip_prefixes`` are removed by one GroupByKey
    (``AdmittedUris``), so each image is scored once, across runs too. The shuffle also
    spreads reading across workers.
    """

    def __init__(self, patterns: Sequence[str], input_list: Optional[str],
                 limits: DecodeLimits, skip_prefixes: Sequence[str] = ()) -> None:
        super().__init__()
        self._uris = AdmittedUris(patterns, input_list, skip_prefixes)
        self._limits = limits

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            pbegin
            | "Uris" >> self._uris
            | "ToItem" >> beam.Map(lambda uri: Item(uri, uri))
            | "ReadBytes" >> beam.ParDo(ReadBytes(self._limits)).with_outputs(
                DEAD_LETTER, main="images"))


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
