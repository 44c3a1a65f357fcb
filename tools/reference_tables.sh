#!/usr/bin/env bash
# Build this machine's reference latency tables (resumable: re-run to continue).
# Timing is pinned to core 1; run from the repository root. Log lines: step, start/end time.
set -u
cd "$(dirname "$0")/.."
HW="taskset -c 1 .venv/bin/hwnas"
step() {
  echo "== $(date -u +%H:%M:%S) start: $*"
  for try in 1 2; do $HW "$@" --no-progress && break; echo "   (retry $try)"; done
  echo "== $(date -u +%H:%M:%S) end: $*"
}
step profile --space proxyless-tiny --runtime onnxruntime
step profile --space proxyless-cifar --runtime onnxruntime
step measure --archs 120 --space proxyless-tiny --runtime onnxruntime --seed 0
step profile --space proxyless-tiny --runtime tflite
step measure --archs 120 --space proxyless-tiny --runtime tflite --seed 0
step profile --space proxyless-cifar --runtime tflite
step profile --space proxyless-tiny --runtime tflite --dtype int8
step measure --archs 40 --space proxyless-cifar --runtime onnxruntime --seed 0
step measure --archs 40 --space proxyless-cifar --runtime tflite --seed 0
