#!/usr/bin/env bash
# GPU smoke test for machines with a prepared Python and no PyPI access:
# a short TRL vs Unsloth sweep on the Qwen2.5-0.5B architecture (random weights, nothing downloaded),
# ending with the comparison table.
#
#   scripts/gpu_smoke.sh PYTHON [overrides...]
#
# PYTHON must have the harness's own dependencies (hydra-core, psutil, rich, nvidia-ml-py) and both
# frameworks (trl, unsloth); a PYTHONPATH pointing at a prepared site directory is passed on to the workers.
set -euo pipefail
python=${1:?usage: scripts/gpu_smoke.sh PYTHON [overrides...]}
shift
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1  # the architecture preset is built locally; never wait on an unreachable hub
exec "$python" -m bench.run framework=trl,unsloth model=qwen2.5-0.5b-arch framework.python="$python" \
  train.lora.r=16 train.max_seq_len=1024 train.batch_size=8 train.max_steps=30 "$@"
