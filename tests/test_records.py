"""Item timings and the dead-letter record shape."""

from __future__ import annotations

from transforms.records import MAX_MESSAGE_CHARS, Item, dead_letter


def test_item_next_copies_timings():
    a = Item("u", b"x", {"read": 1.0})
    b = a.next("pixels", "decode", 2.5)
    assert b.payload == "pixels" and dict(b.timings) == {"read": 1.0, "decode": 2.5}
    assert dict(a.timings) == {"read": 1.0}


def test_dead_letter_shape_and_truncation():
    rec = dead_letter("gs://b/x", "decode", ValueError("x" * 5000))
    assert set(rec) == {"uri", "stage", "error_type", "message"}
    assert rec["error_type"] == "ValueError" and len(rec["message"]) == MAX_MESSAGE_CHARS + 3
    assert dead_letter("u", "read", KeyError())["message"] == "KeyError()"
