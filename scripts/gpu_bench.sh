#!/usr/bin/env bash
# Fair comparisons at real load, on one GPU machine without PyPI access:
#   1. the harness's overhead over a plain TRL script on the Qwen2.5-0.5B architecture at packed 2048-token
#      rows x 8, the target's load: benchmarks/overhead.py, counterbalanced rounds with the noise floor and the
#      sampler's and progress display's shares (6 rounds of 5 runs: the fewest for a 95 % interval);
#   2. TRL vs TRL+Liger vs Unsloth (and LLaMA-Factory where SFTBENCH_LLAMAFACTORY_PYTHONPATH is given) on the
#      seed tutorial's 0.5B job (scenario=seed-0.5b), packing set explicitly, 3 seeds each;
#   3. one memory-frontier cell per framework: the seed tutorial's 7B job on a 24 GB budget;
# then the tables. Steps 2-3 are sized for about 8 minutes on an H100; step 1's 31 runs add to that (not yet
# timed on a GPU). The section sizes below are the knobs.
#
#   scripts/gpu_bench.sh PYTHON [--out DIR]               on the GPU machine
#   scripts/gpu_bench.sh PYTHON --rehearse [--out DIR]    every step on a CPU: tiny model, small numbers
#
# PYTHON runs the harness (hydra-core, psutil, rich, nvidia-ml-py) and, unless SFTBENCH_<NAME>_PYTHON says
# otherwise, every framework; SFTBENCH_<NAME>_PYTHONPATH gives each framework its own site directory (README,
# "GPU runners without PyPI"). In a rehearsal the frameworks use the harness's cached environments instead;
# Unsloth and Liger, which need a GPU, are recorded as skipped with the reason.
set -euo pipefail
usage="usage: scripts/gpu_bench.sh PYTHON [--rehearse] [--out DIR]"
python=${1:?$usage}
shift
rehearse=false
out=results/gpu-bench-$(date +%Y%m%d-%H%M%S)
while (($#)); do
  case $1 in
    --rehearse) rehearse=true ;;
    --out) out=${2:?$usage}; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1  # architecture presets are built locally; never wait on an unreachable hub
mkdir -p "$out"

frameworks=trl,unsloth
[[ -n ${SFTBENCH_LLAMAFACTORY_PYTHONPATH:-} ]] && frameworks+=,llamafactory
if $rehearse; then
  model=model=tiny
  packed="train.packing=packed train.max_seq_len=256 train.batch_size=8 skip_steps=1"
  overhead_size=(--rounds 2 --steps 4 --warmup 0)
  compare_size=(model=tiny train.max_seq_len=256 train.grad_accum=1 train.max_steps=4 train.seed=1 skip_steps=1)
  # The 7B job's settings on the tiny model; no 4-bit weights on a CPU.
  frontier_size=(model=tiny train.quant=none frontier.start=128 frontier.limit=256 frontier.max_probes=2
                 frontier.probe_steps=2)
else
  export SFTBENCH_TRL_PYTHON=${SFTBENCH_TRL_PYTHON:-$python}
  export SFTBENCH_UNSLOTH_PYTHON=${SFTBENCH_UNSLOTH_PYTHON:-$python}
  [[ -n ${SFTBENCH_LLAMAFACTORY_PYTHONPATH:-} ]] && export SFTBENCH_LLAMAFACTORY_PYTHON=${SFTBENCH_LLAMAFACTORY_PYTHON:-$python}
  model=model=qwen2.5-0.5b-arch
  packed="train.packing=packed train.max_seq_len=2048 train.batch_size=8"
  overhead_size=(--rounds 6 --steps 20)
  compare_size=(train.max_steps=15 train.seed=1,2,3)
  # A few probes from 2048 up: the question is whether a 7B job trains at 2k, 4k or 8k tokens on 24 GB.
  frontier_size=(frontier.start=2048 frontier.limit=8192 frontier.granularity=2048 frontier.max_probes=3
                 frontier.probe_steps=2)
fi

echo "== 1. harness overhead over a plain TRL script ($model $packed), counterbalanced"
echo "-- $packed" | tee "$out/overhead.txt"
"$python" benchmarks/overhead.py "${overhead_size[@]}" --overrides "$model $packed" | tee -a "$out/overhead.txt"

echo "== 2. TRL vs TRL+Liger vs ${frameworks#trl,} on scenario=seed-0.5b, packed"
# The scenario trains 3 epochs; a benchmark of steady-state speed needs a few steps of it (train.epochs=null).
compare=(scenario=seed-0.5b train.packing=packed train.epochs=null eval.enabled=false "${compare_size[@]}")
# Exit 3: a run did not finish ok; the sweep goes on, and the report below says which and why.
"$python" -m bench.run "framework=$frameworks" "${compare[@]}" "hydra.sweep.dir=$out/seed-0.5b" || [ $? -eq 3 ]
# Liger is a TRL option: its runs go into the same sweep directory, beside the others, for one report.
"$python" -m bench.run framework=trl train.kernels=liger "${compare[@]}" "hydra.sweep.dir=$out/seed-0.5b" \
  'hydra.sweep.subdir=liger-${hydra.job.num}-trl' || [ $? -eq 3 ]

echo "== 3. memory frontier: scenario=seed-7b-24gb on 24 GB"
"$python" -m bench.frontier "framework=$frameworks" scenario=seed-7b-24gb frontier.vram_budget_gb=24 \
  frontier.axis=seq_len "${frontier_size[@]}" "hydra.sweep.dir=$out/frontier-7b-24gb"

echo "== tables ($out)"
"$python" -m bench.report "$out/seed-0.5b" >/dev/null
grep -v "^round " "$out/overhead.txt"  # the overhead's summary: ratios, noise floor, attribution, verdict
cat "$out/seed-0.5b/report.md" "$out/frontier-7b-24gb/report.md" | grep -v '^!\['
