#!/usr/bin/env bash
# The regression gate of .github/workflows/gpu-regression.yml, runnable anywhere (tests run it on CPU):
#
#   scripts/gpu_regression.sh BASELINE CANDIDATE [bench.run overrides...]
#
# 1. sweeps into CANDIDATE (bench.run with the overrides),
# 2. fails if any run of the sweep did not finish ok,
# 3. compares with BASELINE if it holds a sweep (bench.compare: exit 1 on a regression, 2 when the sweeps
#    cannot be compared, e.g. different GPU models), else says in the step summary that nothing was compared.
# The Markdown summary goes to $GITHUB_STEP_SUMMARY (stdout when unset); PYTHON picks the interpreter.
set -euo pipefail
usage="usage: scripts/gpu_regression.sh BASELINE CANDIDATE [overrides...]"
baseline=$(realpath -m "${1:?$usage}")
candidate=$(realpath -m "${2:?$usage}")
shift 2
python=${PYTHON:-python3}
cd "$(dirname "$0")/.."

note() { printf '%s\n' "$@" >>"${GITHUB_STEP_SUMMARY:-/dev/stdout}"; }

"$python" -m bench.run hydra.sweep.dir="$candidate" "$@"

# bench.run records a failed run and goes on with exit 0; failing here keeps a broken run from passing
# the gate and, on the default branch, from becoming the next baseline.
if ! failed=$("$python" - "$candidate" <<'EOF'
import sys
from pathlib import Path

from bench import results

runs = results.run_dirs(Path(sys.argv[1]))
summaries = {run.name: results.read_json(run / results.SUMMARY) or {} for run in runs}
bad = {name: s for name, s in summaries.items() if s.get("status") != "ok"}
if not runs or bad:
    print(f"### sftbench: {len(bad)} of {len(runs)} runs did not finish ok\n")
    print("| run | status | reason |\n|---|---|---|")
    for name, s in bad.items():
        reason = str(s.get("reason", "")).replace("|", "\\|").replace("\n", " ")
        print(f"| {name} | {s.get('status', 'no summary.json')} | {reason} |")
    sys.exit(1)
EOF
); then
  note "$failed"
  printf '%s\n' "$failed" >&2
  exit 1
fi

if ! compgen -G "$baseline/*/summary.json" >/dev/null; then
  note "### sftbench: no baseline" "" \
    "\`$baseline\` holds no sweep, so this sweep was not compared. On a pull request: the default branch has" \
    "no successful push run with a stored sweep yet, or its artifact has expired."
  exit 0
fi

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
rc=0
"$python" -m bench.compare "$baseline" "$candidate" 2>"$errors" || rc=$?
cat "$errors" >&2
if [ "$rc" -eq 2 ]; then  # bench.compare writes no summary when it refuses
  note "### sftbench: ❌ not comparable" "" "$(cat "$errors")"
fi
exit "$rc"
