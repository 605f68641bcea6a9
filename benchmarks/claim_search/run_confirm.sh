#!/bin/bash
# confirmation: 3 seeds, both test beds, widths 2000 and 5000, one core
cd /work/main
PIN="taskset -c 1 env TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false"
for width in 2000 5000; do
  for bed in digits teacher; do
    $PIN .venv/bin/python benchmarks/claim_search.py --bed $bed --width $width --seeds 0 1 2 --grid confirm 2>&1 | grep --line-buffered -v -e oneDNN -e cuda -e absl -e "note:"
  done
done
