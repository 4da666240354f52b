"""scripts/load_contention.py's argument parsing (the loads themselves need a GPU and run
on the GPU machine: scripts/gpu_session.sh load-variants)."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import load_contention  # noqa: E402 - the script, imported from its folder


def test_decoder_arguments_are_read_as_literals():
    got = load_contention.parse_decoder(["host_memory_padding=0", "hw_decoder_load=0.5",
                                         "use_fast_idct=True", "output_type=RGB"])
    assert got == {"host_memory_padding": 0, "hw_decoder_load": 0.5, "use_fast_idct": True,
                   "output_type": "RGB"}
    assert load_contention.parse_decoder([]) == {}


def test_a_malformed_decoder_argument_is_refused():
    assert load_contention.parse_decoder(["host_memory_padding"]) is None
    assert load_contention.parse_decoder(["=0"]) is None
    assert load_contention.parse_decoder(["not a name=0"]) is None


def test_env_pairs_keep_their_text():
    assert load_contention.parse_env(["DALI_USE_VMM=0", "A=b=c"]) == {"DALI_USE_VMM": "0",
                                                                      "A": "b=c"}
    assert load_contention.parse_env(["NOVALUE"]) is None
