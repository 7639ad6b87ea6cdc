#!/usr/bin/env bash
# Run the README's test command on N fresh clean clones of a commit, one after another, and report each result
# (issue 21: the suite must give the same answer on every run). Each clone gets its own virtual environment, as CI
# does (.ci/run), and CI=true selects the derandomised hypothesis profile, as in CI.
#
#   bash scripts/repeat_suite.sh 20                 # 20 runs of HEAD, results in bench-results/repeat_suite/
#   bash scripts/repeat_suite.sh 10 <commit> tag    # 10 runs of <commit>, logs under .../tag/
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
commit=$(git rev-parse "${2:-HEAD}")
tag=${3:-$commit}
out=$PWD/bench-results/repeat_suite/$tag
mkdir -p "$out"
cmd=$(grep -m1 -E '^python3 -m venv .* pytest' README.md)
for i in $(seq 1 "$runs"); do
  dir=$(mktemp -d /tmp/repeat_suite.XXXXXX)
  git clone -q "$PWD" "$dir/repo"
  git -C "$dir/repo" checkout -q "$commit"
  start=$(date +%s)
  if (cd "$dir/repo" && CI=true bash -c "$cmd") > "$out/run$i.log" 2>&1; then status=pass; else status=FAIL; fi
  echo "run $i: $status in $(( $(date +%s) - start )) s ($(tail -1 "$out/run$i.log"))" | tee -a "$out/summary.txt"
  rm -rf "$dir"
done
echo "repeat_suite: $(grep -c ': pass' "$out/summary.txt") of $(wc -l < "$out/summary.txt") passed ($commit)"
