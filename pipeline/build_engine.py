"""`python -m pipeline.build_engine`: ONNX -> TensorRT plan + sidecar JSON, on the GPU
that will run it.

A thin CLI: the builder is transforms.runtime.tensorrt.builder (see its docstring for
TensorRT 8.6 vs 10/11 and build times); this parses flags and writes the files.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from transforms.runtime.storage import write_bytes
from transforms.runtime.tensorrt.builder import (DEFAULT_TACTICS, BuildOptions, build,
                                                 parse_shapes)
from transforms.runtime.tensorrt.sidecar import DEFAULT_PROFILE, Sidecar
from transforms.spec import OPEN_NSFW_SPEC, ModelSpec


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.build_engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="ONNX model, local or gs://")
    p.add_argument("--output", required=True,
                   help="plan path, local or gs://; the sidecar goes to <output>.json")
    p.add_argument("--min_batch", type=int, default=DEFAULT_PROFILE[0],
                   help="profile minimum batch")
    p.add_argument("--opt_batch", type=int, default=DEFAULT_PROFILE[1],
                   help="profile batch to tune for")
    p.add_argument("--max_batch", type=int, default=DEFAULT_PROFILE[2],
                   help="profile maximum batch")
    p.add_argument("--min_shapes", help="full shapes instead: NAME:1x384x384x3[,NAME:...]")
    p.add_argument("--opt_shapes", help="full optimum shapes, as --min_shapes")
    p.add_argument("--max_shapes", help="full maximum shapes, as --min_shapes")
    p.add_argument("--fp16", action="store_true", help="allow fp16 kernels")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="allow TF32 for fp32 math (TensorRT's default); --no-tf32 for strict fp32")
    p.add_argument("--workspace_gb", type=float, default=4.0, help="builder workspace limit")
    p.add_argument("--timing_cache", help="timing cache file: read if present, then updated")
    p.add_argument("--builder_optimization_level", type=int, default=None,
                   help="0-5 (TensorRT's default 3); lower builds much faster")
    p.add_argument("--fold_spec",
                   help="fold this model spec's normalisation into the plan (a spec JSON, or "
                        "'open_nsfw' for the built-in one): the plan then takes uint8 NHWC "
                        "RGB pixels, a quarter of float32's bytes on every copy")
    p.add_argument("--tactic_sources", default=DEFAULT_TACTICS,
                   help=f"trtexec syntax, e.g. '{DEFAULT_TACTICS}' (the default: those "
                        "libraries are optional in TensorRT 8.6+)")
    return p


def options_from_args(argv: Optional[Sequence[str]] = None) -> BuildOptions:
    a = make_parser().parse_args(argv)
    return BuildOptions(
        onnx=a.onnx, output=a.output, min_batch=a.min_batch, opt_batch=a.opt_batch,
        max_batch=a.max_batch, min_shapes=parse_shapes(a.min_shapes, "--min_shapes"),
        opt_shapes=parse_shapes(a.opt_shapes, "--opt_shapes"),
        max_shapes=parse_shapes(a.max_shapes, "--max_shapes"), fp16=a.fp16, tf32=a.tf32,
        workspace_gb=a.workspace_gb, timing_cache=a.timing_cache,
        builder_optimization_level=a.builder_optimization_level,
        tactic_sources=a.tactic_sources, fold_spec=_fold_spec(a.fold_spec))


def _fold_spec(value: Optional[str]) -> Optional[ModelSpec]:
    if value is None:
        return None
    return OPEN_NSFW_SPEC if value == "open_nsfw" else ModelSpec.from_json(value)


def build_to_files(opts: BuildOptions) -> Sidecar:
    plan, sidecar, timing = build(opts)
    write_bytes(opts.output, plan)
    write_bytes(opts.output + ".json", sidecar.to_json().encode())
    if timing is not None and opts.timing_cache:
        write_bytes(opts.timing_cache, timing)
    return sidecar


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        opts = options_from_args(argv)
        sidecar = build_to_files(opts)
    except Exception as exc:  # noqa: BLE001 - the CLI prints one actionable line
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"built {opts.output} ({sidecar.precision}, TensorRT {sidecar.tensorrt_version}, "
          f"{sidecar.gpu_name} sm_{sidecar.compute_capability}) in "
          f"{sidecar.builder['build_seconds']} s; sidecar {opts.output}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
