#!/usr/bin/env bash
# The regression gate behind action.yml (and so .github/workflows/gpu-regression.yml), runnable anywhere
# (tests run it on CPU):
#
#   scripts/gpu_regression.sh BASELINE CANDIDATE [bench.run overrides...]
#
# 1. with BASELINE_REF set and no sweep in BASELINE yet: sweeps that ref of SOURCE_REPO (a git repository:
#    the calling repository's checkout in the action) into BASELINE, as framework.source;
# 2. sweeps into CANDIDATE, with framework.source=CANDIDATE_SOURCE when set (a directory or git+URL@REF;
#    unset: the released framework);
# 3. fails if any run of a sweep did not finish ok;
# 4. compares with BASELINE if it holds a sweep (bench.compare, with TOLERANCES: a YAML of metric: rel_tol;
#    exit 1 on a regression, 2 when the sweeps cannot be compared, e.g. different GPU models), else says in
#    the step summary that nothing was compared.
# 5. on a regression with BISECT=true: bench.bisect over SOURCE_REPO's commits, from the one the baseline
#    sweep records to the one the candidate's records (those two sweeps are its ends, not swept again; the
#    commits between go under CANDIDATE-bisect), for the first bad commit; where there are no such commits
#    (a release, uncommitted changes) the summary says why. The exit status stays the gate's.
# The Markdown summary (the candidate's findings, then the comparison, then the bisect) goes to
# $GITHUB_STEP_SUMMARY (stdout when unset), verdict=... and first-bad=SHA to $GITHUB_OUTPUT; PYTHON picks
# the interpreter.
set -euo pipefail
usage="usage: scripts/gpu_regression.sh BASELINE CANDIDATE [overrides...]"
baseline=$(realpath -m "${1:?$usage}")
candidate=$(realpath -m "${2:?$usage}")
shift 2
python=${PYTHON:-python3}
candidate_source=${CANDIDATE_SOURCE:-}
if [ -n "$candidate_source" ] && [ -d "$candidate_source" ]; then candidate_source=$(realpath "$candidate_source"); fi
tolerances=${TOLERANCES:+$(realpath "$TOLERANCES")}
source_repo=$(realpath -m "${SOURCE_REPO:-.}")
cd "$(dirname "$0")/.."

note() { printf '%s\n' "$@" >>"${GITHUB_STEP_SUMMARY:-/dev/stdout}"; }
output() { if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "$1=$2" >>"$GITHUB_OUTPUT"; fi; }
verdict() { output verdict "$1"; }
has_sweep() { compgen -G "$1/*/summary.json" >/dev/null; }

# The runs of a sweep that did not finish ok, as a Markdown table; exit 1 when there are any (or no runs).
NOT_OK='
import sys
from pathlib import Path

from bench.core import record

runs, unreadable = record.load_sweep(Path(sys.argv[1]))
bad = [(r.name, r.summary.status, r.summary.reason or "") for r in runs if r.summary.status != "ok"]
bad += [(u.run, "unreadable", u.why) for u in unreadable]
if not (runs or unreadable) or bad:
    print(f"### sftbench: {len(bad)} of {len(runs) + len(unreadable)} runs did not finish ok\n")
    print("| run | status | reason |\n|---|---|---|")
    for name, status, reason in bad:
        reason = reason.replace("|", "\\|").replace("\n", " ")
        print(f"| {name} | {status} | {reason} |")
    sys.exit(1)
'

# The one commit a sweep's runs installed as framework.source, or why there is none (exit 1).
COMMIT='
import sys
from pathlib import Path

from bench.core import record

runs, _ = record.load_sweep(Path(sys.argv[1]))
sources = [r.summary.source for r in runs]
if not runs or not all(sources):
    sys.exit(f"{sys.argv[1]}: its runs installed a release, not a commit")
if any(s["dirty"] for s in sources):
    sys.exit(f"{sys.argv[1]}: its runs installed uncommitted changes (a commit is what bisect searches)")
commits = {s["commit"] for s in sources}
if len(commits) != 1 or None in commits:
    sys.exit(f"{sys.argv[1]}: its runs installed no single commit ({sorted(map(str, commits))})")
print(commits.pop())
'

# One sweep into DIR with framework.source=SRC (empty: the release). bench.run records a failed run, goes on
# and exits 3 at the end; the runs that did not finish ok go to the step summary, and failing here keeps a
# broken run from passing the gate and, on the default branch, from becoming the next baseline.
sweep() {
  local dir=$1 src=$2 failed rc=0
  shift 2
  "$python" -m bench.run hydra.sweep.dir="$dir" ${src:+"framework.source='$src'"} "$@" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then  # 2: input no run could use; 130: interrupted
    verdict "runs failed"
    exit "$rc"
  fi
  if ! failed=$("$python" -c "$NOT_OK" "$dir"); then
    note "$failed"
    printf '%s\n' "$failed" >&2
    verdict "runs failed"
    exit 1
  fi
}

if [ -n "${BASELINE_REF:-}" ] && ! has_sweep "$baseline"; then
  sweep "$baseline" "git+file://$source_repo@$BASELINE_REF" "$@"
fi
sweep "$candidate" "$candidate_source" "$@"
if [ -f "$candidate/report.md" ]; then  # the candidate's findings: the opening section of its report
  note "$(awk '/^## /{n++} n==1' "$candidate/report.md")" ""
fi

if ! has_sweep "$baseline"; then
  note "### sftbench: no baseline" "" \
    "\`$baseline\` holds no sweep, so this sweep was not compared. On a pull request: the default branch has" \
    "no successful push run with a stored sweep yet, or its artifact has expired."
  verdict "no baseline"
  exit 0
fi

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
rc=0
"$python" -m bench.compare "$baseline" "$candidate" ${tolerances:+--tolerances "$tolerances"} 2>"$errors" || rc=$?
cat "$errors" >&2
if [ "$rc" -eq 2 ]; then  # bench.compare writes no summary when it refuses
  note "### sftbench: ❌ not comparable" "" "$(cat "$errors")"
fi
case "$rc" in 0) verdict "ok" ;; 1) verdict "regression" ;; *) verdict "not comparable" ;; esac

# The first bad commit between the baseline's and the candidate's; its output, or why not, to the summary.
bisect() {
  local good bad log
  if ! good=$("$python" -c "$COMMIT" "$baseline" 2>&1) || ! bad=$("$python" -c "$COMMIT" "$candidate" 2>&1); then
    note "### sftbench: no bisect" "" "${bad:-$good}"
    return
  fi
  log=$(mktemp)
  # The gate's two sweeps are good's and bad's measurements: only the commits between them are swept.
  "$python" -m bench.bisect "framework.source=$source_repo" "good=$good" "bad=$bad" "out=${candidate%/}-bisect" \
    "good-sweep=$baseline" "bad-sweep=$candidate" ${tolerances:+"tolerances=$tolerances"} "$@" >"$log" 2>&1 || true
  note "### sftbench: bisect from $good to $bad" "" '```' "$(cat "$log")" '```'
  output first-bad "$(sed -n 's/^first bad commit: \([0-9a-f]*\) .*/\1/p' "$log")"
  rm -f "$log"
}
if [ "$rc" -eq 1 ] && [ "${BISECT:-false}" = true ]; then
  bisect "$@"
fi
exit "$rc"
