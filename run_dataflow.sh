#!/usr/bin/env bash
# Submit the scoring job to Dataflow on GPU workers, from environment variables.
#
#   PROJECT=my-project REGION=us-central1 BUCKET=my-bucket \
#   IMAGE=us-central1-docker.pkg.dev/my-project/beam/beam-trt-inference:0.1.0-beam2.77.0 \
#   INPUT='gs://my-bucket/images/**' ENGINE_CACHE=gs://my-bucket/engines \
#   ./run_dataflow.sh [--dry-run] [extra pipeline flags...]
#
# Required: PROJECT REGION BUCKET IMAGE, and INPUT or INPUT_LIST.
# Optional (default):
#   OUTPUT (gs://$BUCKET/scores)   BACKEND (tensorrt)   ENGINE (none)   ENGINE_CACHE (none)
#   MODEL (bundled open_nsfw)      MODEL_SPEC (none)    TRT_PRECISION (fp16)
#   GPU_TYPE (nvidia-l4)           GPU_COUNT (1)        MACHINE_TYPE (g2-standard-8)
#   MAX_WORKERS (4)                DISK_SIZE_GB (100)   HARNESS_THREADS (2)
#   SDK_PROCESSES (per-vcpu, or 1: one SDK process per worker with HARNESS_THREADS threads)
#   MAX_BATCH (32)                 JOB_NAME (beam-trt-inference-<UTC time>)
#   MPS (0; 1: NVIDIA's Multi-Process Service on each worker's GPU, use_nvidia_mps: the SDK
#        processes share one GPU context; Dataflow allows it with GPU_COUNT=1 only)
#   WAIT (1: block until the job ends, print the summary and exit 3 when over the failure
#         budget, --max_failed_fraction / --max_failed; 0: return once submitted)
#
# One SDK process per vCPU (Dataflow's own default), each with its own engine, CUDA context
# and DALI pipeline, and HARNESS_THREADS threads. Measured on the H100 machine (16 cores,
# docs/benchmarks.md, "Long runs"): processes scale, threads do not. The GPU path went
# 1,158 -> 4,284 -> ~7,700 images/s with 1 -> 4 -> 8 processes; 16 threads in one process
# gave 1.7x one thread. Memory per process: about 0.85 GB host RSS and 1.5-2 GB of GPU
# memory (GPU path), so 8 fit a g2-standard-8 (32 GB, L4 24 GB). SDK_PROCESSES=1 restores
# one process per worker (--experiments=no_use_multiple_sdk_containers) for models too
# large for one copy per vCPU; pair it with more HARNESS_THREADS or --model_copies.
# --dry-run prints the command instead of running it. The launcher's own preflight
# (pipeline/preflight.py) checks GPU type, image Beam version and output before submitting.
set -euo pipefail
cd "$(dirname "$0")"

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; shift; fi

missing=()
for v in PROJECT REGION BUCKET IMAGE; do [ -n "${!v:-}" ] || missing+=("$v"); done
[ -n "${INPUT:-}${INPUT_LIST:-}" ] || missing+=("INPUT or INPUT_LIST")
if [ ${#missing[@]} -gt 0 ]; then
  echo "run_dataflow.sh: set ${missing[*]} (see the header of this script)" >&2
  exit 2
fi

BACKEND=${BACKEND:-tensorrt}
GPU_TYPE=${GPU_TYPE:-nvidia-l4}
GPU_COUNT=${GPU_COUNT:-1}
JOB_NAME=${JOB_NAME:-beam-trt-inference-$(date -u +%Y%m%d-%H%M%S)}
MPS_OPTION=""
[ "${MPS:-0}" = 1 ] && MPS_OPTION=";use_nvidia_mps"   # preflight refuses it with GPU_COUNT > 1

cmd=(python -m pipeline.main
  --runner DataflowRunner
  --project "$PROJECT" --region "$REGION" --job_name "$JOB_NAME"
  --temp_location "gs://$BUCKET/tmp" --staging_location "gs://$BUCKET/staging"
  --sdk_container_image "$IMAGE" --sdk_location container
  --setup_file ./setup.py
  --dataflow_service_options "worker_accelerator=type:$GPU_TYPE;count:$GPU_COUNT;install-nvidia-driver${MPS_OPTION}"
  --machine_type "${MACHINE_TYPE:-g2-standard-8}"
  --max_num_workers "${MAX_WORKERS:-4}"
  --disk_size_gb "${DISK_SIZE_GB:-100}"
  --number_of_worker_harness_threads "${HARNESS_THREADS:-2}"
  --backend "$BACKEND"
  --output "${OUTPUT:-gs://$BUCKET/scores}"
  --max_batch_size "${MAX_BATCH:-32}")
[ -n "${INPUT:-}" ] && cmd+=(--input "$INPUT")
[ -n "${INPUT_LIST:-}" ] && cmd+=(--input_list "$INPUT_LIST")
[ -n "${MODEL:-}" ] && cmd+=(--model "$MODEL")
[ -n "${MODEL_SPEC:-}" ] && cmd+=(--model_spec "$MODEL_SPEC")
[ -n "${ENGINE:-}" ] && cmd+=(--engine "$ENGINE")
if [ -n "${ENGINE_CACHE:-}" ]; then
  cmd+=(--engine_cache "$ENGINE_CACHE" --trt_precision "${TRT_PRECISION:-fp16}"
        --trt_profile "1,16,${MAX_BATCH:-32}")
fi
if [ "$BACKEND" = "onnx" ]; then
  cmd+=(--onnx_providers "CUDAExecutionProvider,CPUExecutionProvider")
fi
[ "${SDK_PROCESSES:-per-vcpu}" = 1 ] && cmd+=(--experiments no_use_multiple_sdk_containers)
[ "${WAIT:-1}" = 1 ] && cmd+=(--wait_until_finish)
cmd+=("$@")

if [ "$DRY_RUN" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
exec "${cmd[@]}"
