#!/usr/bin/env bash
# Where the webhook's CPU goes under load: a sampling profile (perf) of the release `lb-l7-webhook serve` while
# h2load sends the bench review over HTTP/2 (4 connections x 4 streams), summed by component.
#
#   benches/profile.sh                      # as the Deployment logs: --log-format json --log info
#   PROFILE_LOG=warn benches/profile.sh     # without the per-review log line
#   PROFILE_BIN=/tmp/lb-l7-webhook-before benches/profile.sh   # another build (before/after)
#
# The server runs on CPU 0 and h2load on CPU 1 (as benches/load.sh). On a VM without hardware counters perf falls
# back to the cpu-clock event; benches/callgrind.sh counts instructions instead, unaffected by the machine's load.
#
# Needs perf (Debian: linux-perf), h2load (nghttp2-client) and python3. The release binary has symbols but no
# frame pointers, so the profile is flat (self time per function), grouped here by crate and purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PORT=${PROFILE_PORT:-18543}
PROBE=${PROFILE_PROBE_PORT:-18180}
for tool in perf h2load python3 curl; do
    command -v "$tool" >/dev/null || { echo "profile.sh: $tool not found" >&2; exit 2; }
done
BIN=${PROFILE_BIN:-}
if [[ -z $BIN ]]; then
    cargo build --release --bin lb-l7-webhook >&2
    BIN=$ROOT/target/release/lb-l7-webhook
fi
WORK=$(mktemp -d)
SERVER=
cleanup() {
    [[ -n "$SERVER" ]] && kill "$SERVER" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
taskset -c 0 "$BIN" --log "${PROFILE_LOG:-info}" --log-format "${PROFILE_LOG_FORMAT:-json}" serve --listen "127.0.0.1:$PORT" \
    --probe-listen "127.0.0.1:$PROBE" --certs-dir "$WORK/certs" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PROBE/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
taskset -c 1 h2load -t 1 -c 4 -m 4 -D 12 -d "$ROOT/tests/data/reviews/bench-service.json" -H 'content-type: application/json' \
    "https://127.0.0.1:$PORT/mutate" >"$WORK/h2load.out" 2>&1 &
LOAD=$!
sleep 3
perf record -F 2999 -p "$SERVER" -o "$WORK/perf.data" -- sleep 6 >/dev/null 2>&1
wait "$LOAD" || true
perf report -i "$WORK/perf.data" --no-children --sort dso,symbol 2>/dev/null | grep '%' >"$WORK/flat.txt"
cp "$WORK/flat.txt" "${PROFILE_FLAT_OUT:-/dev/null}"
echo "h2load: $(grep '^finished' "$WORK/h2load.out")"
python3 - "$WORK/flat.txt" <<'PY'
import collections, re, sys
groups = [
    ("JSON decode (serde_json, k8s-openapi types)", r"serde_json::de|serde_json::read|k8s_openapi|serde_core::de|Deserialize|Visitor|MapAccess|SeqAccess|from_utf8|parse_str"),
    ("JSON encode + base64", r"serde_json::ser|Serialize|base64|format_escaped"),
    ("logging (tracing, fmt)", r"tracing|nu_ansi|sharded_slab|core::fmt|fmt::write|format_inner|write_str|Debug>::fmt|Display>::fmt"),
    ("policy + patch", r"policy::|patch::|wildmatch|json_patch|jsonptr"),
    ("metrics", r"prometheus"),
    ("HTTP (h2, hyper, axum, tower)", r"h2::|hyper|axum|tower|http::|bytes::"),
    ("TLS (ring, rustls)", r"ring_core|rustls|ring::"),
    ("tokio runtime", r"tokio|mio"),
    ("malloc, free, memcpy", r"malloc|free|realloc|memmove|memcpy|memset|_int_|unlink_chunk|memcmp"),
    ("kernel (network, scheduling, log writes)", r"\[k\]"),
]
total = collections.Counter()
for line in open(sys.argv[1]):
    m = re.match(r"\s*([\d.]+)%\s+(.*)", line)
    if not m:
        continue
    share, what = float(m.group(1)), m.group(2)
    for name, rx in groups:
        if re.search(rx, what):
            total[name] += share
            break
    else:
        total["other"] += share
print("| component | share of server CPU samples |")
print("|---|---:|")
for name, share in sorted(total.items(), key=lambda kv: -kv[1]):
    print(f"| {name} | {share:.1f} % |")
PY
