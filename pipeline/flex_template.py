"""`python -m pipeline.flex_template > metadata.json`: the Dataflow Flex Template spec,
generated from InferenceOptions so the template and the CLI cannot drift apart
(tests/test_dataflow.py compares the committed file with this output)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List

from pipeline.options import InferenceOptions

REQUIRED = {"output"}

# Beam/Dataflow options the GPU job needs at launch; declared so the template accepts them.
BEAM_PARAMETERS = [
    ("sdk_container_image", "The GPU container built from tensor_rt.dockerfile "
                            "(tag ...-beam<version> equal to the launcher's Beam)."),
    ("sdk_location", "Set to 'container': the Beam SDK comes from the image."),
    ("dataflow_service_options", "worker_accelerator=type:GPU;count:N;install-nvidia-driver"),
    ("experiments", "Leave unset for one SDK process per vCPU (measured fastest); "
                    "no_use_multiple_sdk_containers for one process per worker."),
    ("number_of_worker_harness_threads", "Threads per SDK process (2 by run_dataflow.sh)."),
]


def parameters() -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser()
    InferenceOptions._add_argparse_args(parser)
    out = []
    for action in parser._actions:  # argparse has no public iterator over its actions
        if not action.option_strings or action.dest == "help":
            continue
        if action.help == argparse.SUPPRESS:     # set by the launcher, not by users
            continue
        param: Dict[str, Any] = {
            "name": action.dest,
            "label": action.dest.replace("_", " ").capitalize(),
            "helpText": " ".join((action.help or "").split()),
            "isOptional": action.dest not in REQUIRED,
        }
        if action.choices:
            param["regexes"] = ["^(" + "|".join(map(str, action.choices)) + ")$"]
        elif action.type is int:
            param["regexes"] = ["^[0-9]+$"]
        out.append(param)
    for name, text in BEAM_PARAMETERS:
        out.append({"name": name, "label": name.replace("_", " ").capitalize(),
                    "helpText": text, "isOptional": True})
    return out


def metadata() -> Dict[str, Any]:
    return {
        "name": "beam-trt-inference",
        "description": "Score images in GCS with TensorRT or ONNX Runtime on GPU workers; "
                       "writes predictions, dead letters and per-bundle metrics.",
        "parameters": parameters(),
    }


def main() -> int:
    json.dump(metadata(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
