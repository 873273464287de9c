#!/usr/bin/env bash
# Load harness: the webhook (`lb-l7-webhook serve`) and the baseline (benches/baseline_server.rs, a minimal
# hyper + rustls server answering the same bytes without parsing) side by side, in one run, on this machine.
#
#   benches/load.sh                  # the full run whose tables BENCHMARKS.md shows (about 6 minutes)
#   LOAD_DURATION=2 benches/load.sh  # a quick smoke run
#   LOAD_CONCURRENCY="16 4x16" LOAD_H1_CONCURRENCY= LOAD_RATE_RUNS=paced benches/load.sh   # the issue-15 checks only
#
# Pinned, as the shipped Deployment is measured: both servers on CPU LOAD_SERVER_CPU (default 0), every load
# generator on CPU LOAD_CLIENT_CPU (default 1), so the server CPU per review is not blurred by the client's. The
# webhook logs as the Deployment does: `--log-format json --log info` (LOAD_WEBHOOK_LOG_FORMAT, LOAD_WEBHOOK_LOG).
#
# Needs h2load and wrk (Debian: apt-get install -y nghttp2-client wrk). Builds both servers in release mode,
# generates certificates (serve's development CA), then drives each server over TLS on 127.0.0.1 with
#   - HTTP/2: h2load, one thread; concurrency 1 = 1 connection x 1 stream, 16 = 4 x 4, 64 = 8 x 8, CxM = C x M;
#   - HTTP/1.1 keep-alive: wrk, one thread, one request in flight per connection; concurrency = connections;
#   - a fixed rate (LOAD_RATE, default 2000 reviews/s) over HTTP/2, 4 connections, two ways:
#     * benches/rate.rs, open loop: a pacing thread releases one request every 1/LOAD_RATE s, whatever the answers
#       do, and latency is measured from the instant each request was due (the p99 check);
#     * h2load --rps=LOAD_RATE/4 per connection (up to 8 streams each), shown for comparison: h2load releases
#       its requests in bursts, so its latencies include the queue of each burst.
# Each run is LOAD_DURATION seconds (default 10) after LOAD_WARMUP seconds (default 2) of warm-up; the baseline and
# the webhook alternate, run after run. Latency percentiles are computed from every request of the measured
# period (h2load --log-file; wrk's own histogram through a Lua `done` hook). RSS comes from /proc/PID/status:
# VmRSS after start, VmHWM (peak) after each run, VmRSS 5 s after the last run. Server CPU per review is
# (utime + stime) from /proc/PID/stat over the run, divided by the reviews answered.
#
# Output: a Markdown report on stdout, also written to target/load/report-<timestamp>.md.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${LOAD_DURATION:-10}
WARMUP=${LOAD_WARMUP:-2}
RATE=${LOAD_RATE:-2000}
RATE_DURATION=${LOAD_RATE_DURATION:-20}
CONCURRENCY=${LOAD_CONCURRENCY:-"1 16 4x16 64"}
H1_CONCURRENCY=${LOAD_H1_CONCURRENCY-"1 16 64"}
# Which fixed-rate runs: "paced" (rate.rs), "bursty" (h2load --rps), both by default.
RATE_RUNS=${LOAD_RATE_RUNS:-"paced bursty"}
SERVER_CPU=${LOAD_SERVER_CPU:-0}
CLIENT_CPU=${LOAD_CLIENT_CPU:-1}
WEBHOOK_LOG_FORMAT=${LOAD_WEBHOOK_LOG_FORMAT:-json}
REVIEW=${LOAD_REVIEW:-$ROOT/tests/data/reviews/bench-service.json}
WEBHOOK_PORT=${LOAD_WEBHOOK_PORT:-18443}
PROBE_PORT=${LOAD_PROBE_PORT:-18080}
BASELINE_PORT=${LOAD_BASELINE_PORT:-19443}
WEBHOOK_LOG=${LOAD_WEBHOOK_LOG:-info}

for tool in h2load wrk curl taskset; do
    command -v "$tool" >/dev/null || { echo "load.sh: $tool not found (apt-get install -y nghttp2-client wrk curl)" >&2; exit 2; }
done

# LOAD_WEBHOOK_BIN / LOAD_BASELINE_BIN: run other builds (a before/after comparison) instead of building these.
WEBHOOK_BIN=${LOAD_WEBHOOK_BIN:-}
if [[ -z $WEBHOOK_BIN ]]; then
    echo "load.sh: building release binaries" >&2
    cargo build --release --bin lb-l7-webhook >&2
    WEBHOOK_BIN=$ROOT/target/release/lb-l7-webhook
fi
BASELINE_BIN=${LOAD_BASELINE_BIN:-}
if [[ -z $BASELINE_BIN ]]; then
    BASELINE_BIN=$(cargo bench --bench baseline_server --no-run 2>&1 | tee /dev/stderr | sed -n 's/.*Executable .*(\(.*baseline_server-[^)]*\)).*/\1/p' | tail -n1)
    [[ -x "$BASELINE_BIN" ]] || BASELINE_BIN=$ROOT/$BASELINE_BIN
fi
[[ -x "$BASELINE_BIN" ]] || { echo "load.sh: cannot find the baseline_server executable" >&2; exit 2; }
if [[ $RATE_RUNS == *paced* ]]; then
    RATE_BIN=$(cargo bench --bench rate --no-run 2>&1 | tee /dev/stderr | sed -n 's/.*Executable .*(\(.*rate-[^)]*\)).*/\1/p' | tail -n1)
    [[ -x "$RATE_BIN" ]] || RATE_BIN=$ROOT/$RATE_BIN
    [[ -x "$RATE_BIN" ]] || { echo "load.sh: cannot find the rate executable" >&2; exit 2; }
fi

WORK=$(mktemp -d)
mkdir -p "$ROOT/target/load"
REPORT=$ROOT/target/load/report-$(date -u +%Y%m%dT%H%M%SZ).md
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

taskset -c "$SERVER_CPU" "$WEBHOOK_BIN" --log "$WEBHOOK_LOG" --log-format "$WEBHOOK_LOG_FORMAT" serve --listen "127.0.0.1:$WEBHOOK_PORT" --probe-listen "127.0.0.1:$PROBE_PORT" \
    --certs-dir "$WORK/certs" 2>"$WORK/webhook.log" &
WEBHOOK_PID=$!
PIDS+=("$WEBHOOK_PID")
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PROBE_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$PROBE_PORT/readyz" >/dev/null || { cat "$WORK/webhook.log" >&2; exit 2; }
taskset -c "$SERVER_CPU" "$BASELINE_BIN" --listen "127.0.0.1:$BASELINE_PORT" --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
    --review "$REVIEW" 2>"$WORK/baseline.log" &
BASELINE_PID=$!
PIDS+=("$BASELINE_PID")
for _ in $(seq 100); do
    curl -fsS --cacert "$WORK/certs/ca.crt" -o /dev/null -d @"$REVIEW" "https://127.0.0.1:$BASELINE_PORT/mutate" 2>/dev/null && break
    sleep 0.1
done

# Both answer the same bytes.
curl -fsS --cacert "$WORK/certs/ca.crt" -H 'content-type: application/json' --data-binary @"$REVIEW" \
    "https://127.0.0.1:$WEBHOOK_PORT/mutate" -o "$WORK/webhook.json"
curl -fsS --cacert "$WORK/certs/ca.crt" -H 'content-type: application/json' --data-binary @"$REVIEW" \
    "https://127.0.0.1:$BASELINE_PORT/mutate" -o "$WORK/baseline.json"
cmp -s "$WORK/webhook.json" "$WORK/baseline.json" || { echo "load.sh: the two servers answer differently" >&2; exit 2; }
grep -q '"patch"' "$WORK/webhook.json" || { echo "load.sh: the webhook did not patch the review" >&2; exit 2; }

kib() { awk '/^'"$2"':/ {print $2}' "/proc/$1/status"; }
mib() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1024}'; }
ms() { awk -v v="$1" 'BEGIN {printf "%.3f", v / 1000}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
pid_of() { if [[ $1 == webhook ]]; then echo "$WEBHOOK_PID"; else echo "$BASELINE_PID"; fi; }
port_of() { if [[ $1 == webhook ]]; then echo "$WEBHOOK_PORT"; else echo "$BASELINE_PORT"; fi; }

declare -A IDLE_START
for s in baseline webhook; do IDLE_START[$s]=$(kib "$(pid_of $s)" VmRSS); done

cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("LOAD_REVIEW_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout, e.status))
end
LUA
export LOAD_REVIEW_FILE=$REVIEW

# Percentiles (ms) of the third column (microseconds) of an h2load log: "p50 p99 p99.9 count".
percentiles() {
    cut -f3 "$1" | sort -n | awk '{v[NR] = $1} END {
        if (NR == 0) { print "- - - 0"; exit }
        split("0.5 0.99 0.999", q, " ")
        for (i = 1; i <= 3; i++) { k = int(q[i] * NR + 0.999999); if (k < 1) k = 1; if (k > NR) k = NR; printf "%.3f ", v[k] / 1000 }
        print NR }'
}

ROWS=()
RATIOS=()
declare -A RPS
# ratio LABEL: webhook / baseline throughput of the pair just run (the baseline runs first, then the webhook).
ratio() {
    RATIOS+=("| $1 | $(awk -v w="${RPS[$1/webhook]}" -v b="${RPS[$1/baseline]}" 'BEGIN { if (b > 0) printf "%.1f %%", 100 * w / b; else print "-" }') |")
}
# run_h2 SERVER CONNECTIONS STREAMS LABEL [extra h2load args...]
run_h2() {
    local server=$1 conns=$2 streams=$3 label=$4
    shift 4
    local pid port t0 t1 out log
    pid=$(pid_of "$server")
    port=$(port_of "$server")
    out=$WORK/h2.out
    log=$WORK/h2.log
    rm -f "$log"
    t0=$(cpu_ticks "$pid")
    taskset -c "$CLIENT_CPU" h2load -t 1 -c "$conns" -m "$streams" -D "$DURATION" --warm-up-time="${WARMUP}s" -d "$REVIEW" \
        -H 'content-type: application/json' --log-file="$log" "$@" "https://127.0.0.1:$port/mutate" >"$out" 2>&1 || true
    t1=$(cpu_ticks "$pid")
    local rps ok failed p50 p99 p999 n cpu
    rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")
    ok=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$out")
    failed=$(sed -n 's/^requests: .* \([0-9]*\) failed, \([0-9]*\) errored.*/\1+\2/p' "$out")
    read -r p50 p99 p999 n < <(percentiles "$log")
    cpu=$(awk -v d=$((t1 - t0)) -v t="$TICK" -v n="$n" 'BEGIN { if (n > 0) printf "%.0f", d / t * 1e6 / n; else print "-" }')
    [[ -n "$rps" ]] || { cat "$out" >&2; rps=0; }
    RPS[$label/$server]=$rps
    [[ $server == webhook ]] && ratio "$label"
    ROWS+=("| $label | $server | $(printf '%.0f' "$rps") | $p50 | $p99 | $p999 | $ok | $((failed)) | $cpu | $(mib "$(kib "$pid" VmHWM)") |")
    echo "load.sh: $label $server: $rps req/s, p99 $p99 ms" >&2
}

# run_h1 SERVER CONNECTIONS LABEL
run_h1() {
    local server=$1 conns=$2 label=$3
    local pid port t0 t1 out
    pid=$(pid_of "$server")
    port=$(port_of "$server")
    out=$WORK/wrk.out
    taskset -c "$CLIENT_CPU" wrk -t 1 -c "$conns" -d "${WARMUP}s" -s "$WORK/post.lua" "https://127.0.0.1:$port/mutate" >/dev/null 2>&1 || true
    t0=$(cpu_ticks "$pid")
    taskset -c "$CLIENT_CPU" wrk -t 1 -c "$conns" -d "${DURATION}s" --timeout 5s -s "$WORK/post.lua" "https://127.0.0.1:$port/mutate" >"$out" 2>&1 || true
    t1=$(cpu_ticks "$pid")
    local requests micros p50 p99 p999 errors status rps cpu
    read -r requests micros p50 p99 p999 errors status < <(sed -n 's/^RESULT //p' "$out")
    rps=$(awk -v n="$requests" -v us="$micros" 'BEGIN {printf "%.1f", n / (us / 1e6)}')
    cpu=$(awk -v d=$((t1 - t0)) -v t="$TICK" -v n="$requests" 'BEGIN { if (n > 0) printf "%.0f", d / t * 1e6 / n; else print "-" }')
    RPS[$label/$server]=$rps
    [[ $server == webhook ]] && ratio "$label"
    ROWS+=("| $label | $server | $(printf '%.0f' "$rps") | $(ms "$p50") | $(ms "$p99") | $(ms "$p999") | $((requests - status)) | $((errors + status)) | $cpu | $(mib "$(kib "$pid" VmHWM)") |")
    echo "load.sh: $label $server: $rps req/s, p99 $((p99)) us" >&2
}

# run_rate SERVER LABEL: benches/rate.rs at LOAD_RATE for RATE_DURATION seconds.
run_rate() {
    local server=$1 label=$2
    local pid port t0 t1 sent ok failed rps p50 p99 p999 max cpu
    pid=$(pid_of "$server")
    port=$(port_of "$server")
    t0=$(cpu_ticks "$pid")
    read -r sent ok failed rps p50 p99 p999 max < <(taskset -c "$CLIENT_CPU" "$RATE_BIN" --connect "127.0.0.1:$port" --ca "$WORK/certs/ca.crt" \
        --review "$REVIEW" --rate "$RATE" --duration "$RATE_DURATION" --warmup "$WARMUP" --connections 4 | sed -n 's/^RESULT //p')
    t1=$(cpu_ticks "$pid")
    cpu=$(awk -v d=$((t1 - t0)) -v t="$TICK" -v n="$ok" 'BEGIN { if (n > 0) printf "%.0f", d / t * 1e6 / (n * (1 + '"$WARMUP"' / '"$RATE_DURATION"')); else print "-" }')
    RPS[$label/$server]=$rps
    [[ $server == webhook ]] && ratio "$label"
    ROWS+=("| $label | $server | $(printf '%.0f' "$rps") | $p50 | $p99 | $p999 | $ok | $failed | $cpu | $(mib "$(kib "$pid" VmHWM)") |")
    echo "load.sh: $label $server: $rps req/s, p99 $p99 ms (max $max ms)" >&2
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for c in $CONCURRENCY; do
    case $c in
        1) conns=1 streams=1 ;;
        16) conns=4 streams=4 ;;
        64) conns=8 streams=8 ;;
        *x*) conns=${c%x*} streams=${c#*x} ;;
        *) conns=$c streams=1 ;;
    esac
    for s in baseline webhook; do run_h2 "$s" "$conns" "$streams" "h2 c=$((conns * streams)) (${conns}x${streams})"; done
done
for c in $H1_CONCURRENCY; do
    for s in baseline webhook; do run_h1 "$s" "$c" "h1 c=$c"; done
done
if [[ $RATE_RUNS == *paced* ]]; then
    for s in baseline webhook; do run_rate "$s" "h2 fixed $RATE/s (rate.rs, paced)"; done
fi
if [[ $RATE_RUNS == *bursty* ]]; then
    for s in baseline webhook; do
        DURATION=$RATE_DURATION run_h2 "$s" 4 8 "h2 fixed $RATE/s (h2load --rps, bursty)" --rps=$((RATE / 4))
    done
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
sleep 5
declare -A IDLE_END PEAK
for s in baseline webhook; do
    IDLE_END[$s]=$(kib "$(pid_of $s)" VmRSS)
    PEAK[$s]=$(kib "$(pid_of $s)" VmHWM)
done

{
    echo "## Load run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) memory, $(uname -sr)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src benches 2>/dev/null || echo ' (with local changes)')"
    echo "- load average (1, 5, 15 min): $LOAD_START at the start, $LOAD_END at the end"
    echo "- review: $(basename "$REVIEW") ($(wc -c <"$REVIEW") bytes); answer: $(wc -c <"$WORK/webhook.json") bytes, identical from both servers"
    echo "- each run: ${DURATION} s after ${WARMUP} s warm-up (fixed rate: ${RATE_DURATION} s); servers pinned to CPU $SERVER_CPU, load generators to CPU $CLIENT_CPU; webhook logs: --log-format $WEBHOOK_LOG_FORMAT --log $WEBHOOK_LOG"
    echo
    echo "| run | server | reviews/s | p50 ms | p99 ms | p99.9 ms | 2xx | failed | server CPU µs/review | peak RSS MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "| run | webhook / baseline throughput |"
    echo "|---|---:|"
    printf '%s\n' "${RATIOS[@]}"
    echo
    echo "| server | RSS after start MiB | peak RSS (VmHWM) MiB | RSS 5 s after the last run MiB |"
    echo "|---|---:|---:|---:|"
    for s in baseline webhook; do
        echo "| $s | $(mib "${IDLE_START[$s]}") | $(mib "${PEAK[$s]}") | $(mib "${IDLE_END[$s]}") |"
    done
} | tee "$REPORT"
echo "load.sh: report written to $REPORT" >&2
