"""The URI side: globs and/or a manifest -> each URI once, minus those already scored.

Why it matters for speed: on Beam's local runner this side runs as whole stages before
any image is scored, so its cost per URI caps a run's images/s at any size
(docs/benchmarks.md). Why it matters for correctness: it is what makes "every image
scored exactly once" hold across overlapping globs, a manifest listing a file twice, and
reruns over the same output.
"""

from __future__ import annotations

import zlib
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from transforms.io import predictions_patterns, uris_in
from transforms.manifest import ReadManifest
from transforms.records import METRICS_NAMESPACE
from transforms.runtime import startup


def scored_uris(readable: fileio.ReadableFile) -> Iterator[str]:
    """The URIs in one earlier predictions file (JSONL or Parquet)."""
    yield from uris_in(readable.metadata.path)


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


# URIs are grouped by a stable hash into this many buckets before the shuffle, so the
# runner moves a few thousand lists instead of one element per URI; a URI always lands in
# the same bucket, so de-duplication and the anti-join stay exact. 1,024 buckets spread
# over hundreds of workers; 100,000,000 URIs are about 100,000 per bucket.
BUCKETS = 1024
# a bundle's buckets are sent on once this many URIs are held (bounded memory for a glob
# or manifest range of any size)
FLUSH_URIS = 100_000

Listing = Tuple[bool, List[str]]     # (listed now? else scored earlier, URIs)


def bucket_of(uri: str) -> int:
    """The URI's bucket: crc32, the same in every process (str hash() is salted)."""
    return zlib.crc32(uri.encode("utf-8")) % BUCKETS


@beam.typehints.with_output_types(Tuple[int, Listing])   # so Beam picks compact coders
class _ToBuckets(beam.DoFn):
    """uri -> (bucket, (listed?, [the bundle's URIs in that bucket])).

    Why: Beam's local runner decodes, groups and re-encodes every shuffled element in
    its one control process (GroupingBuffer); one element per URI cost about 10 us
    there, before any image was scored. Per bucket, it handles lists.
    """

    def __init__(self, listed: bool) -> None:
        self._listed = listed
        self._held: Dict[int, List[str]] = {}
        self._count = 0

    def start_bundle(self) -> None:
        self._held, self._count = {}, 0

    def process(self, uri: str) -> Iterator[Tuple[int, Listing]]:
        self._held.setdefault(bucket_of(uri), []).append(uri)
        self._count += 1
        if self._count >= FLUSH_URIS:
            yield from self._drain()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for kv in self._drain():
            yield GlobalWindows.windowed_value(kv)

    def _drain(self) -> Iterator[Tuple[int, Listing]]:
        held, self._held, self._count = self._held, {}, 0
        for bucket, uris in held.items():
            yield bucket, (self._listed, uris)


class _AdmitOnce(beam.DoFn):
    """(bucket, [(listed?, URIs), ...]) -> each listed URI once, unless already scored."""

    def __init__(self) -> None:
        self._skipped = Metrics.counter(METRICS_NAMESPACE, "images_skipped")
        # every image admitted here must end as images_ok or images_failed: the launcher
        # checks that balance (pipeline/accounting.py)
        self._admitted = Metrics.counter(METRICS_NAMESPACE, "images_admitted")

    def process(self, element: Tuple[int, Iterable[Listing]]) -> Iterator[str]:
        _, listings = element
        scored: Set[str] = set()
        listed: List[List[str]] = []
        for is_listed, uris in listings:
            if is_listed:
                listed.append(uris)
            else:
                scored.update(uris)
        seen: Set[str] = set()
        admitted = skipped = 0
        for uris in listed:
            for uri in uris:
                if uri in seen:
                    continue
                seen.add(uri)
                if uri in scored:            # listed, and scored by an earlier run
                    skipped += 1
                    continue
                if not admitted:
                    startup.record("first_admitted")
                admitted += 1
                yield uri
        self._admitted.inc(admitted)
        self._skipped.inc(skipped)


class AdmittedUris(beam.PTransform):
    """Globs and/or a manifest -> each URI once, unless already scored under
    ``skip_prefixes``: one GroupByKey of hash buckets, which also spreads the URIs
    across workers.

    ``spread``: a Reshuffle of the admitted URIs. Dataflow's dynamic work rebalancing
    "cannot reparallelize data finer than a single record" (its docs), and a bucket after
    the GroupByKey is one record, so 1,024 buckets of a
    100,000,000-URI job (about 100,000 images each) would leave a long tail; after the
    Reshuffle each URI can be rebalanced on its own. Beam's local runner deals out whole
    buckets to its processes evenly, and would pay a stage per URI for the Reshuffle, so
    the launcher asks for it only on other runners.
    """

    def __init__(self, patterns: Sequence[str], input_list: Optional[str],
                 skip_prefixes: Sequence[str] = (), spread: bool = False) -> None:
        super().__init__()
        if not patterns and not input_list:
            raise ValueError("AdmittedUris: expected at least one glob or a manifest, "
                             "got neither")
        self._patterns = tuple(patterns)
        self._input_list = input_list
        self._skip = tuple(skip_prefixes)
        self._spread = spread

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        sources = []
        for i, pattern in enumerate(self._patterns):
            sources.append(
                pbegin
                | f"Match[{i}]" >> fileio.MatchFiles(pattern)
                | f"Path[{i}]" >> beam.Map(lambda m: m.path)
                | f"Buckets[{i}]" >> beam.ParDo(_ToBuckets(True)))
        if self._input_list:
            sources.append(pbegin | "Manifest" >> ReadManifest(self._input_list)
                           | "ManifestBuckets" >> beam.ParDo(_ToBuckets(True)))
        if any_predictions(self._skip):
            sources.append(pbegin | "Scored" >> ScoredUris(self._skip)
                           | "ScoredBuckets" >> beam.ParDo(_ToBuckets(False)))
        # each source is bucketed inside its own stage, so a Flatten of several (which
        # Beam's local runner runs as a stage of its own) copies lists, not URIs
        listings = (sources[0] if len(sources) == 1
                    else tuple(sources) | "Listings" >> beam.Flatten())
        admitted = (listings
                    | "Join" >> beam.GroupByKey()
                    | "AdmitOnce" >> beam.ParDo(_AdmitOnce()))
        return admitted | "SpreadUris" >> beam.Reshuffle() if self._spread else admitted
