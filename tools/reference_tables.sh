#!/usr/bin/env bash
# Build this machine's reference latency tables (resumable: re-run to continue).
#   tools/reference_tables.sh          everything, one step after the other, pinned to core 1
#   tools/reference_tables.sh ops      operator tables + onnxruntime whole models (core 1)
#   tools/reference_tables.sh models   tflite whole models (core 0; run beside "ops" to halve the time)
#   tools/reference_tables.sh retime   re-time the fp32 operators and proxyless-tiny models of both
#                                      runtimes in 5 interleaved rounds (tools/remeasure_interleaved.py)
# Timing uses the CPU time of the single inference thread (--clock auto), so other jobs
# on the machine inflate it far less than wall time. Run from anywhere; log: step start/end times.
set -u
cd "$(dirname "$0")/.."
part=${1:-all}
core=1; [ "$part" = models ] && core=0
HW="taskset -c $core .venv/bin/hwnas"
step() {
  echo "== $(date -u +%H:%M:%S) start: $*"
  for try in 1 2; do $HW "$@" --no-progress && break; echo "   (retry $try)"; done
  echo "== $(date -u +%H:%M:%S) end: $*"
}
if [ "$part" = all ] || [ "$part" = ops ]; then
  step profile --space proxyless-tiny --runtime onnxruntime
  step profile --space proxyless-cifar --runtime onnxruntime
  step measure --archs 120 --space proxyless-tiny --runtime onnxruntime --seed 0
  step measure --archs 40 --space proxyless-cifar --runtime onnxruntime --seed 0
  step profile --space proxyless-tiny --runtime tflite
  step profile --space proxyless-cifar --runtime tflite
  step profile --space proxyless-tiny --runtime tflite --dtype int8
fi
if [ "$part" = all ] || [ "$part" = models ]; then
  step measure --archs 120 --space proxyless-tiny --runtime tflite --seed 0
  step measure --archs 40 --space proxyless-cifar --runtime tflite --seed 0
fi
if [ "$part" = all ] || [ "$part" = retime ]; then
  for runtime in onnxruntime tflite; do
    echo "== $(date -u +%H:%M:%S) start: retime $runtime"
    taskset -c $core .venv/bin/python tools/remeasure_interleaved.py --device "$(.venv/bin/python -c \
      'from hwnas.latency_data import default_device_name as d; print(d())')" --runtime $runtime --rounds 5
    echo "== $(date -u +%H:%M:%S) end: retime $runtime"
  done
fi
