"""Reading images: the admitted URIs -> Item(uri, bytes), or a dead letter per URI.

Why a byte cap at read time: a huge file is refused without being held in memory, before
any decoder sees it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.admitted import AdmittedUris
from transforms.decode import ImageTooLarge, check_size
from transforms.records import DEAD_LETTER, Item, PerImageStageFn
from transforms.runtime import startup
from transforms.spec import DecodeLimits


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


class ReadImages(beam.PTransform):
    """Globs and/or a manifest -> URIs not yet scored, once each -> Item(uri, bytes).

    URIs listed twice (overlapping globs, a manifest listing a file twice) and URIs
    already in the predictions under ``skip_prefixes`` are removed by one GroupByKey
    (``AdmittedUris``), so each image is scored once, across runs too. The shuffle also
    spreads reading across workers (``spread``: per URI, see AdmittedUris).
    """

    def __init__(self, patterns: Sequence[str], input_list: Optional[str],
                 limits: DecodeLimits, skip_prefixes: Sequence[str] = (),
                 spread: bool = False) -> None:
        super().__init__()
        self._uris = AdmittedUris(patterns, input_list, skip_prefixes, spread)
        self._limits = limits

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            pbegin
            | "Uris" >> self._uris
            | "ToItem" >> beam.Map(lambda uri: Item(uri, uri))
            | "ReadBytes" >> beam.ParDo(ReadBytes(self._limits)).with_outputs(
                DEAD_LETTER, main="images"))
