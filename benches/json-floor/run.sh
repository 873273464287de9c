#!/usr/bin/env bash
# Instructions per review of each step of src/main.rs, under valgrind's callgrind: the count at N=2000 less the
# count at N=1000, over 1000. Usage: benches/json-floor/run.sh [REVIEW.json]  (default: the bench review)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REVIEW=$(realpath "${1:-$HERE/../../tests/data/reviews/bench-service.json}")
cd "$HERE"
command -v valgrind >/dev/null || { echo "run.sh: valgrind not found" >&2; exit 2; }
cargo build --release --locked >&2
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/json-floor "$1" "$REVIEW" "$2" 2>&1 >/dev/null |
        sed -n 's/.*I *refs: *//p' | tr -d ,
}
echo "| step | instructions per review |"
echo "|---|---:|"
for step in review serde-json simd-json sonic-rs utf8; do
    a=$(count "$step" 1000)
    b=$(count "$step" 2000)
    echo "| $step | $(( (b - a) / 1000 )) |"
done
