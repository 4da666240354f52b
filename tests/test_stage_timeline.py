"""The runner-side stage table: readable stage names, and the wrap only when timing."""

from __future__ import annotations

from apache_beam.runners.portability.fn_api_runner import fn_runner

from pipeline import stage_timeline
from transforms.runtime import startup


def test_fused_stage_names_become_their_top_level_labels():
    name = ("((ref_AppliedPTransform_ReadImages-Join-CoGroupByKeyImpl-MapTuple-collect_values-_32)"
            ")+(ref_AppliedPTransform_ReadImages-NewOnce_33))+(AllDeadLetters/Write/0))+("
            "ref_AppliedPTransform_DecodeImage-ParDo-DecodeImage-_38))+(ref_PCollection_"
            "PCollection_40)+(ref_AppliedPTransform_RunInference-BatchElements_44))+("
            "ref_AppliedPTransform_Postprocess-ParDo_50))")
    assert stage_timeline.short_name(name) == (
        "ReadImages, AllDeadLetters, DecodeImage, RunInference +1")
    assert stage_timeline.short_name(name, keep=5) == (
        "ReadImages, AllDeadLetters, DecodeImage, RunInference, Postprocess")
    assert stage_timeline.short_name("(Join/Read)+(Join/GroupByKey/Write)") == "Join"


def test_the_runner_is_wrapped_only_when_start_up_is_timed(monkeypatch):
    original = fn_runner.FnApiRunner._execute_bundle
    monkeypatch.setattr(fn_runner.FnApiRunner, "_execute_bundle", original)
    monkeypatch.delenv(startup.ENV, raising=False)
    assert stage_timeline.apply() is False
    assert fn_runner.FnApiRunner._execute_bundle is original
    monkeypatch.setenv(startup.ENV, "/tmp/unused")
    assert stage_timeline.apply() is True
    assert stage_timeline.apply() is False          # once
    assert fn_runner.FnApiRunner._execute_bundle is not original
