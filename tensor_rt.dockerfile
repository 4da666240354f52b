# Dataflow SDK container for beam-trt-inference: NVIDIA's TensorRT image with Beam's
# SDK harness copied in (Beam's "use a different base image" recipe).
#
#   TensorRT 10.8 / CUDA 12.8 / Ubuntu 24.04 / Python 3.12   <- nvcr.io/nvidia/tensorrt:25.01-py3
#   Beam SDK harness 2.77.0 for Python 3.12                  <- apache/beam_python3.12_sdk:2.77.0
#
# The Beam version here, in setup.py (BEAM_VERSION) and on the launcher must be equal;
# tests/test_dataflow.py checks this file against setup.py, and the build checks the
# base image's Python. Build and push: see README "Run on Dataflow".

FROM apache/beam_python3.12_sdk:2.77.0 AS beam_sdk

FROM nvcr.io/nvidia/tensorrt:25.01-py3

ARG PYTHON_VERSION=3.12
ARG BEAM_VERSION=2.77.0

# Ubuntu 24.04 marks its Python as externally managed; this image is single-purpose.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1

COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam

WORKDIR /opt/beam-trt-inference
COPY setup.py README.md ./
COPY pipeline ./pipeline
COPY transforms ./transforms
COPY tests ./tests
COPY samples ./samples
COPY pytest.ini ./

# TensorRT comes from the base image (not PyPI). onnxruntime-gpu replaces the CPU
# onnxruntime that the base install pulls in (both own the module `onnxruntime`).
# onnxruntime-gpu 1.22, cuda-python 12.8 and DALI 2.4 (--preprocess gpu; the version the
# GPU tests ran) are CUDA 12 builds, matching CUDA 12.8 here.
# The project itself is installed from this directory; its pins live in setup.py.
# hadolint ignore=DL3013
RUN test "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "${PYTHON_VERSION}" \
    && python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)" \
    && pip install . \
    && pip uninstall -y onnxruntime \
    && pip install --force-reinstall --no-deps onnxruntime-gpu==1.22.0 \
    && pip install cuda-python==12.8.0 nvidia-ml-py==13.580.82 \
    && pip install nvidia-dali-cuda120==2.4.0 \
    && python3 -c "import nvidia.dali as d; print('DALI', d.__version__)" \
    && python3 -c "import apache_beam as b; import sys; sys.exit(b.__version__ != '${BEAM_VERSION}')" \
    && python3 -c "import onnxruntime as o; print(o.get_available_providers())"

ENTRYPOINT ["/opt/apache/beam/boot"]
