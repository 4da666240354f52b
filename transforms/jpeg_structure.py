"""Is this JPEG whole? A CPU walk over every marker segment and every entropy-coded scan.

Why: GPU decoders (nvJPEG through DALI) decode a truncated JPEG without an error, leaving
the rows after the cut black or garbage, and can fail a whole batch or crash the process
on bytes that are not a JPEG at all. Pillow raises on both. So before a JPEG may take the
GPU path it must prove here that every segment length stays inside the file, that a frame
header and at least one scan exist, and that the entropy-coded data ends in an EOI marker.
Bytes after the EOI (camera trailers) are allowed. The walk skips entropy-coded data with
``bytes.find``, so it costs about a millisecond for a 12 MP photo.
"""

from __future__ import annotations

import re
from typing import Iterator, Tuple

from transforms.decode_errors import UndecodableImage

# Start-of-frame markers (every coding process); C4 (DHT), C8 (JPG), CC (DAC) are not frames.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


def _truncated(message: str) -> UndecodableImage:
    """A JPEG whose segments or scans run past the end of the file: the same error type
    the CPU path's decoder gives it, so dead letters do not depend on the path taken."""
    return UndecodableImage(f"JPEG is truncated: {message}")


def _length(data: bytes, pos: int) -> int:
    if pos + 4 > len(data):
        raise _truncated(f"JPEG segment header at byte {pos} runs past the end "
                            f"({len(data)} bytes)")
    return int.from_bytes(data[pos + 2:pos + 4], "big")


# A marker that ends entropy-coded data: 0xFF (plus fill bytes) and anything but a
# stuffed zero or a restart marker. One C-level search instead of a Python loop over
# every stuffed 0xFF00 (about one per 256 bytes of a photo).
_SCAN_END = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")


def _end_of_scan(data: bytes, pos: int) -> int:
    """The offset of the first marker after entropy-coded data starting at ``pos``
    (stuffed 0xFF00 and restart markers are part of the data)."""
    found = _SCAN_END.search(data, pos)
    if found is None:
        raise _truncated(f"JPEG entropy-coded data runs to the end of the file "
                            f"({len(data)} bytes) without an EOI marker")
    return found.start()


def jpeg_segments(data: bytes, start: int = 0, *, through_scans: bool = False
                  ) -> Iterator[Tuple[int, int, int]]:
    """(marker, payload offset, payload length) of each marker segment of the JPEG at
    ``start``, the one walk both callers share. Header-only (``through_scans`` False) it
    stops at the first SOS or EOI: enough for the sizes image_bounds checks. Through the
    scans it skips each scan's entropy-coded data and ends at EOI, yielding EOI as
    (0xD9, position, 0). Malformed or truncated structure raises UndecodableImage."""
    if data[start:start + 2] != b"\xff\xd8":
        raise UndecodableImage(f"not a JPEG: expected SOI ff d8 at byte {start}, got "
                               f"{data[start:start + 2].hex(' ')}")
    pos = start + 2
    while True:
        if pos + 2 > len(data):
            raise _truncated(f"JPEG ends at byte {len(data)} before its EOI marker")
        if data[pos] != 0xFF:
            raise UndecodableImage(f"JPEG: expected a marker at byte {pos}, got "
                                   f"{data[pos]:#04x}")
        marker = data[pos + 1]
        if marker == 0xFF:                       # fill bytes before a marker
            pos += 1
            continue
        if marker == 0xD9:                       # EOI
            if through_scans:
                yield marker, pos, 0
            return
        if marker == 0xD8 or marker == 0x00:
            raise UndecodableImage(f"JPEG: unexpected marker ff {marker:02x} at byte {pos}")
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xDA and not through_scans:
            return
        length = _length(data, pos)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise _truncated(f"JPEG segment ff {marker:02x} at byte {pos} declares "
                             f"{length} bytes; only {len(data) - pos - 2} remain")
        yield marker, pos + 4, length - 2
        pos = _end_of_scan(data, end) if marker == 0xDA else end


def check_jpeg_structure(data: bytes) -> int:
    """Raise UndecodableImage unless ``data`` is a structurally whole JPEG; return the
    marker of its (first) frame header: 0xC0 baseline, 0xC2 progressive, 0xC3 lossless..."""
    frame, scans = 0, 0
    for marker, off, _ in jpeg_segments(data, through_scans=True):
        if marker == 0xD9:
            if not frame or not scans:
                raise UndecodableImage(f"JPEG has EOI at byte {off} but "
                                       f"{'no frame header' if not frame else 'no scan'}")
            return frame
        if marker in SOF_MARKERS and not frame:
            frame = marker
        if marker == 0xDA:                       # SOS: header, then entropy-coded data
            if not frame:
                raise UndecodableImage(f"JPEG scan at byte {off - 4} comes before any "
                                       "frame header")
            scans += 1
    raise _truncated(f"JPEG ends at byte {len(data)} before its EOI marker")  # unreachable
