#!/bin/bash
# coarse screen: 1 seed, width 2000, both test beds.  GRID=screen or GRID=screen2
cd /work/main
PIN="taskset -c 1 env TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false"
for bed in digits teacher; do
  $PIN .venv/bin/python benchmarks/claim_search.py --bed $bed --width 2000 --seeds 0 --grid ${GRID:-screen} 2>&1 | grep --line-buffered -v -e oneDNN -e cuda -e absl -e "note:"
done
