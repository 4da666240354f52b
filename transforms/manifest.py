"""A manifest file (one URI per line) -> its URIs, read in byte ranges by many workers.

Why not one reader: on Beam's local runner the URI side runs as whole stages before any
image is scored, and one SDK process reading a 1,000,000-line manifest kept fifteen others
idle for seconds (docs/benchmarks.md, third 2026-11-30 session). An uncompressed manifest
is cut into byte ranges at launch (its size is known from a listing) and each range is
read by whichever worker gets it after a Reshuffle; a line belongs to the range where it
starts, so every line is read exactly once. A compressed manifest cannot be cut: it is
streamed by one reader, as before.

Why not ReadFromText (which splits too): its per-line range tracking cost about 8 us a
line here, more than the read itself.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator, List, Optional, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# a range is at least this long, and a manifest is cut into at most MAX_RANGES: 1,000,000
# GCS URIs (about 60 MB) become 57 ranges, a few per worker of a 16-process machine
MIN_RANGE_BYTES = 1 << 20
MAX_RANGES = 256

Range = Tuple[str, int, int]          # (path, first byte, end byte exclusive)


def manifest_uri(line: str) -> Optional[str]:
    """One URI per line; blank lines and '#' comments are skipped."""
    line = line.strip()
    return None if not line or line.startswith("#") else line


def _uris(lines: Iterator[bytes]) -> Iterator[str]:
    for raw in lines:
        uri = manifest_uri(raw.decode("utf-8"))
        if uri:
            yield uri


def manifest_file_uris(path: str) -> Iterator[str]:
    """Every URI of the manifest at ``path``, streamed by one reader (a gzip manifest is
    decompressed by its extension): the pipeline's own reading, which pipeline.audit
    repeats to know a run's inputs."""
    with FileSystems.open(path) as f:
        yield from _uris(iter(f.readline, b""))   # Beam's CompressedFile has no __iter__


def manifest_uris(readable: fileio.ReadableFile) -> Iterator[str]:
    """``manifest_file_uris`` of a matched file."""
    yield from manifest_file_uris(readable.metadata.path)


def ranges_of(path: str, size: int, min_bytes: int = MIN_RANGE_BYTES,
              max_ranges: int = MAX_RANGES) -> List[Range]:
    """Cut ``size`` bytes into near-equal ranges of at least ``min_bytes`` (at most
    ``max_ranges`` of them; an empty file is one empty range)."""
    count = max(1, min(max_ranges, size // min_bytes))
    bounds = [size * i // count for i in range(count + 1)]
    return [(path, bounds[i], bounds[i + 1]) for i in range(count)]


def lines_in_range(f: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """The lines of ``f`` that start at a byte in [start, end). The line that straddles
    ``start`` belongs to the range before; the last one may run past ``end``."""
    pos = start
    if start > 0:
        f.seek(start - 1)
        pos = start - 1 + len(f.readline())   # b"\n" when a line starts exactly at start
    else:
        f.seek(0)
    while pos < end:
        raw = f.readline()
        if not raw:
            return
        pos += len(raw)
        yield raw


def range_uris(piece: Range) -> Iterator[str]:
    """The URIs of one byte range of an uncompressed manifest."""
    path, start, end = piece
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        yield from _uris(lines_in_range(f, start, end))


def splittable_size(path: str) -> Optional[int]:
    """The manifest's size when it can be read in ranges (uncompressed by its extension
    and listable now), else None: it is then streamed by one reader, which also reports a
    missing file the way the rest of the URI side does."""
    if CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED:
        return None
    try:
        found = FileSystems.match([path], [1])[0].metadata_list
    except Exception:  # noqa: BLE001 - the streamed read raises the real error at run time
        return None
    return found[0].size_in_bytes if found else None


class ReadManifest(beam.PTransform):
    """A manifest path -> its URIs (duplicates kept: the anti-join removes them)."""

    def __init__(self, path: str, min_bytes: int = MIN_RANGE_BYTES,
                 max_ranges: int = MAX_RANGES) -> None:
        super().__init__()
        self._path = path
        self._min_bytes = min_bytes
        self._max_ranges = max_ranges

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        size = splittable_size(self._path)
        if size is None:
            return (pbegin
                    | "ManifestPath" >> beam.Create([self._path])
                    | "MatchManifest" >> fileio.MatchAll()
                    | "OpenManifest" >> fileio.ReadMatches()
                    | "ParseManifest" >> beam.FlatMap(manifest_uris))
        return (pbegin
                | "Ranges" >> beam.Create(
                    ranges_of(self._path, size, self._min_bytes, self._max_ranges))
                | "SpreadRanges" >> beam.Reshuffle()
                | "ReadRange" >> beam.FlatMap(range_uris))
