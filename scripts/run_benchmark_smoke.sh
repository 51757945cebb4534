#!/usr/bin/env bash
# Run every benchmark script in smoke mode (`--smoke`: the smallest sizes that exercise every code path
# the script times), so that no benchmark rots unnoticed. The numbers printed mean nothing and are not
# recorded anywhere. Every script runs even after a failure; the exit status is non-zero if any script
# failed (raised, or does not know --smoke), and the failures are listed at the end.
#
# Usage: bash scripts/run_benchmark_smoke.sh [FOLDER]   (default: benchmarks/; files named _*.py are
# helpers, not benchmarks, and are skipped)
set -uo pipefail
folder="${1:-$(dirname "$0")/../benchmarks}"
python="${PYTHON:-python}"
failed=()
count=0
shopt -s nullglob
for script in "$folder"/*.py; do
    name="$(basename "$script")"
    [[ "$name" == _* ]] && continue
    count=$((count + 1))
    start=$SECONDS
    echo "benchmark smoke: $name"
    if "$python" "$script" --smoke; then
        echo "benchmark smoke: $name passed in $((SECONDS - start)) s"
    else
        echo "benchmark smoke: $name FAILED (exit $?) after $((SECONDS - start)) s"
        failed+=("$name")
    fi
done
if [ "$count" -eq 0 ]; then
    echo "benchmark smoke: no benchmark scripts in $folder" >&2
    exit 1
fi
if [ "${#failed[@]}" -gt 0 ]; then
    echo "benchmark smoke: ${#failed[@]} of $count failed: ${failed[*]}" >&2
    exit 1
fi
echo "benchmark smoke: all $count passed"
