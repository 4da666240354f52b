"""The per-image decode failures, each one becomes a dead letter with its class name.

Why a module of its own: the byte-level size checks (``image_bounds``) and the Pillow
decoder (``decode``) raise the same errors, and neither should import the other.
"""

from __future__ import annotations


class DecodeError(ValueError):
    """Base class: the bytes of one image could not become pixels."""


class EmptyImage(DecodeError):
    """The file has no bytes."""


class ImageTooLarge(DecodeError):
    """Bytes or pixels over the configured caps (decompression-bomb guard)."""


class UndecodableImage(DecodeError):
    """Not an image Pillow can read, or a truncated/corrupt one."""


class UnsupportedFormat(DecodeError):
    """A format Pillow knows but this decoder refuses, because it cannot be bounded."""


class UnsupportedMode(DecodeError):
    """A Pillow mode this decoder has no correct RGB conversion for."""
