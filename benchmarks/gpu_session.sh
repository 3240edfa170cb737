#!/usr/bin/env bash
# One call on a borrowed GPU machine: install s5cli there, then the checks in order of worth, each under its
# own time limit, every result written under $OUT as soon as it exists (a call cut at its limit still
# returns what finished). Why one script: a session gets ~15 minutes of device time, a machine takes a
# minute or two to start, so there is one full call, rarely two (benchmarks/README.md, "On a GPU").
#
#   OUT=/tmp/out bash benchmarks/gpu_session.sh [seconds]    # default 560: the call's limit less a margin
#
# Needs decord, av and scikit-video as wheels in .whl/ (see benchmarks/README.md), the machine's own torch
# with CUDA, and the split files where tests find them (S5CLI_SHARED_DATA: ../shared does not travel). Writes: graph-tests.log, graphs.json, batch16.json, bench.log, cuda-checks.json,
# pytest.log, profile.json, fused.json (at most 8 files come back from such a call; setup.log's lines go to
# bench.log).
set -u
OUT=${OUT:?set OUT to the folder whose files come back}
BUDGET=${1:-560}
START=$SECONDS
export PYTHONUNBUFFERED=1
left() { echo $((BUDGET - (SECONDS - START))); }
# The smaller of $1 seconds and what is left, or 0 when under 30 s are left: callers then skip the step
# (GNU timeout reads a duration of 0 as "no limit", and refuses a negative one).
cap() { local t; t=$(left); if [ "$t" -lt 30 ]; then echo 0; elif [ "$t" -gt "$1" ]; then echo "$1"; else echo "$t"; fi; }
stamp() { echo "== +$((SECONDS - START)) s: $*" | tee -a "$OUT/bench.log"; }

{
  python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl
  python3 -m pip install -q --no-deps --no-build-isolation -e .
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used --format=csv
  python3 -c "import torch, s5cli; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  command -v s5
} >"$OUT/setup.txt" 2>&1
stamp "setup done: $(tail -2 "$OUT/setup.txt" | head -1)"
cat "$OUT/setup.txt" >>"$OUT/bench.log" && rm "$OUT/setup.txt"

# 1. Do CUDA-graph steps capture and compute what eager steps compute? Do the fused kernels (compiled) agree?
timeout 150 python3 -m pytest -q -p no:cacheprovider -rfE tests/benchmark/test_cuda_graph.py tests/models/test_cauchy_fused.py \
  >"$OUT/graph-tests.log" 2>&1
stamp "graph tests rc=$? $(tail -1 "$OUT/graph-tests.log")"

# 2. S5's inference step stage by stage, candidate changes beside it (benchmarks/profile_inference.py).
# Their tables go nowhere (the JSON holds them); their errors go to bench.log, so a failure says why.
timeout 90 python3 benchmarks/profile_inference.py --device cuda --paper --json "$OUT/profile.json" \
  >/dev/null 2>>"$OUT/bench.log"
stamp "profile_inference rc=$?"
timeout 60 python3 benchmarks/fused_cauchy.py --json "$OUT/fused.json" >/dev/null 2>>"$OUT/bench.log"
stamp "fused_cauchy rc=$?"

# 3. The benchmark as a user types it (paper size, bf16, CUDA graphs on by default), then at the paper's
# training batch (eager steps were measured in v20 and only matter where graphs cannot capture).
timeout 210 s5 benchmark --json "$OUT/graphs.json" >>"$OUT/bench.log" 2>&1
stamp "s5 benchmark (graphs) rc=$?"
limit=$(cap 200)
if [ "$limit" -gt 0 ]; then
  timeout "$limit" s5 benchmark --batch 16 --json "$OUT/batch16.json" >>"$OUT/bench.log" 2>&1
  stamp "s5 benchmark --batch 16 rc=$?"
else
  stamp "s5 benchmark --batch 16 skipped: $(left) s left"
fi

# 4. Host syncs per step (default size: the counts do not depend on it) beside the test suite.
timeout $(( $(left) > 20 ? $(left) - 10 : 10 )) python3 benchmarks/cuda_checks.py --json "$OUT/cuda-checks.json" \
  >>"$OUT/bench.log" 2>&1 &
checks=$!
# Two threads per test worker: eight workers of torch's default 16 threads on 16 cores crawled (v20).
OMP_NUM_THREADS=2 timeout $(( $(left) > 20 ? $(left) - 10 : 10 )) python3 -m pytest -v -p no:cacheprovider \
  -rfE --tb=short -n 8 --timeout 120 tests >"$OUT/pytest.log" 2>&1
stamp "pytest rc=$? $(tail -1 "$OUT/pytest.log")"
wait $checks
stamp "cuda_checks rc=$?"
