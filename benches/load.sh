#!/usr/bin/env bash
# Load harness: drives the same load (same tool, concurrency, duration and request) through
#   1. a bare hyper pass-through proxy (the baseline: benches/src/bin/passthrough.rs),
#   2. jitgate with the Cedar quickstart bundle and the decision log on, RS256 tokens from a real JWKS endpoint
#      (benches/src/bin/jwks.rs) with the verified-token cache, and 10,000 active grants in its index
#      (benches/src/bin/seed_grants.rs),
#   3. the same during a reload storm (a bundle file rewritten every 200 ms, each rewrite a new revision),
#   4. jitgate with `[log] acknowledge = "journal"` (a response waits for its record's journal write, not for its
#      SQLite commit),
#   5. jitgate with the decision log off (what the log costs),
#   6. with --postgres URL: jitgate as in 2, its grant store in PostgreSQL instead of SQLite (replicas, issue 16),
#      run right after 2 and compared with it (a database of its own is created on that server and dropped after),
# all in front of one fast upstream (benches/src/bin/upstream.rs), and prints req/s, p50, p99, jitgate's ratio to
# the baseline, the storm's p99 against the steady p99, jitgate's resident memory after each run, each proxy's CPU time
# per request, and (from jitgate's /metrics) how long a response waited for its decision record and how many
# records a commit held.
#
# usage: benches/load.sh [--baseline-only] [--duration 10] [--connections 32] [--tool-threads 1] [--grants 10000]
#                        [--no-storm] [--rate QPS|auto|off] [--upstream-delay-us N] [--no-build] [--keep]
#                        [--postgres URL] [--modes "on journal off"] [--pin] [--perf DIR] [--rounds N]
#   --keep keeps the work directory and the process logs. --rate adds an open-loop phase: passthrough and jitgate
#   (log on, journal, log off) at the same offered request rate (with `hey`), to compare p99 at the same load; `auto` (the default)
#   is half of what jitgate sustained in its closed-loop run. --upstream-delay-us makes the upstream wait that long
#   before each answer (a service that does some work); the default 0 measures the proxies' own cost alone.
#   --modes picks jitgate's runs among on, journal and off (pg is added after on with --postgres). --pin puts the
#   proxies on core 1 and the load tool, upstream and JWKS endpoint on core 0 (taskset), as sidebyside.sh does; with
#   --postgres also a PostgreSQL server on this machine (its processes, while the harness runs), as if it were on
#   a host of its own rather than on the proxy's core. --perf DIR records a CPU profile of each measured jitgate
#   run (`perf record -g` on the proxy process, all threads, for the run's duration) into DIR/NAME.data; compare two
#   with `perf report -i DIR/NAME.data --sort comm,sym --no-children`. --rounds N runs jitgate's modes N times, in
#   turn forwards and backwards (on pg, pg on, ...: drift of the machine falls on both), with the open loop and the
#   storm in the first round only, and prints each round's ratios and their median.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"

DURATION=10          # seconds per run
CONNECTIONS=32       # concurrent keep-alive connections
TOOL_THREADS=1       # load generator threads (the machine is small: the tool competes with the servers)
UPSTREAM_THREADS=1   # upstream runtime workers
UPSTREAM_DELAY_US=0  # upstream service time per request (a sleep, no CPU)
GRANTS=10000         # active grants seeded into the store before jitgate starts
RATE=auto            # open-loop phase: requests/s offered to both (auto: half of jitgate's closed-loop req/s)
STORM=1
BASELINE_ONLY=0
BUILD=1
KEEP=0
POSTGRES=""          # a server URL (postgres://user@host:port/db): adds the PostgreSQL-store run
MODES="on journal off"
PIN_PROXY=()         # --pin: taskset prefixes
PIN_LOAD=()
PERF_DIR=""          # --perf: where each measured jitgate run's profile goes
ROUNDS=1             # --rounds: how many times jitgate's modes run

UPSTREAM_ADDR=127.0.0.1:19000
PASSTHROUGH_ADDR=127.0.0.1:19001
JITGATE_ADDR=127.0.0.1:19002
JITGATE_ADMIN_ADDR=127.0.0.1:19003
JWKS_ADDR=127.0.0.1:19004

while [ $# -gt 0 ]; do
  case "$1" in
    --baseline-only) BASELINE_ONLY=1 ;;
    --duration) DURATION="$2"; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    --tool-threads) TOOL_THREADS="$2"; shift ;;
    --grants) GRANTS="$2"; shift ;;
    --no-storm) STORM=0 ;;
    --rate) RATE="$2"; shift ;;
    --upstream-delay-us) UPSTREAM_DELAY_US="$2"; shift ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    --postgres) POSTGRES="$2"; shift ;;
    --modes) MODES="$2"; shift ;;
    --pin) PIN_PROXY=(taskset -c 1); PIN_LOAD=(taskset -c 0) ;;
    --perf) PERF_DIR="$(mkdir -p "$2" && cd "$2" && pwd)"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/jitgate-load.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -z "${PG_DB:-}" ] || psql -q "$POSTGRES" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
  for pid in ${PG_PINNED:-}; do taskset -a -p -c "0-$(( $(nproc) - 1 ))" "$pid" >/dev/null 2>&1 || true; done
  if [ "$KEEP" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ------------------------------------------------------------------------------------------------------------------
# CONFIG: jitgate's configuration (keys as in schemas/config.schema.json) and the caller's credential.
# ------------------------------------------------------------------------------------------------------------------
# The measured request: an engineer listing payments (allowed by `engineers-read`; no grant needed, but the caller
# holds two of the seeded grants, so they are looked up and materialized on every request).
REQUEST_METHOD=GET
REQUEST_PATH=/payments
ISSUER=https://idp.load.test/
AUDIENCE=jitgate-load
# The caller's bearer token: RS256, signed by the jwks helper's key (sub=alice, groups=[engineering]). Override with
# JITGATE_TOKEN=... for a token from elsewhere (it must verify against the issuer below).

# jitgate_config on|journal|off: jitgate's config for these addresses (benches/config.sh).
source "$ROOT/benches/config.sh"
# ------------------------------------------------------------------------------------------------------------------

if [ "$BUILD" = 1 ]; then
  if [ "$BASELINE_ONLY" = 1 ]; then
    cargo build --release -p jitgate-benches --bin upstream --bin passthrough
  else
    cargo build --release -p jitgate -p jitgate-benches --bins
  fi
fi

# The load tool: oha if installed, else wrk (installed from Debian when missing).
if command -v oha >/dev/null; then
  TOOL=oha
else
  TOOL=wrk
  if ! command -v wrk >/dev/null; then
    echo "installing wrk with apt-get" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y wrk >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null; }
  fi
fi

# start NAME LOGFILE CMD...: runs CMD in the background and waits until it prints "listening on".
start() {
  local name="$1" log="$2"; shift 2
  "$@" >"$log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 200); do
    grep -q "listening on" "$log" 2>/dev/null && { echo "$pid"; return 0; }
    kill -0 "$pid" 2>/dev/null || { echo "$name exited:" >&2; cat "$log" >&2; return 1; }
    sleep 0.05
  done
  echo "$name did not start listening within 10s:" >&2; cat "$log" >&2; return 1
}

# wait_http URL [HEADER]: until URL answers at all (any status), or 10 s.
wait_http() {
  for _ in $(seq 1 200); do
    curl -s -o /dev/null ${2:+-H "$2"} "$1" && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2; return 1
}

# cpu_ticks PID: user + system CPU time the process has used, in clock ticks (from /proc/PID/stat).
cpu_ticks() {
  # The command name (field 2) may contain spaces: count the fields after its closing parenthesis.
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# core_ticks: "busy total" clock ticks of each core, space separated pairs in core order (from /proc/stat).
core_ticks() {
  awk '/^cpu[0-9]+ / { busy = $2 + $3 + $4 + $7 + $8; total = busy + $5 + $6; printf "%d %d ", busy, total }' /proc/stat
}

# pg_ticks: CPU ticks used so far by the local PostgreSQL server's processes (0 when there are none).
pg_ticks() {
  local t=0 pid
  for pid in $(pgrep -x postgres 2>/dev/null); do
    t=$(( t + $(cpu_ticks "$pid" 2>/dev/null || echo 0) ))
  done
  echo "$t"
}

# log_counters: "wait_sum_s wait_count committed batches" from jitgate's /metrics (zeros when unreachable).
log_counters() {
  curl -s "http://$JITGATE_ADMIN_ADDR/metrics" | awk '
    /^jitgate_log_wait_seconds_sum / { s = $2 } /^jitgate_log_wait_seconds_count / { n = $2 }
    /^jitgate_log_records_committed_total / { c = $2 } /^jitgate_log_batches_total / { b = $2 }
    END { printf "%s %d %d %d\n", s + 0, n + 0, c + 0, b + 0 }'
}

# load NAME URL [HEADER]: prints "NAME req/s p50 p99 non2xx cpu_us" (latencies in ms). With LOAD_PID set, cpu_us
# is that process's CPU time (user + system) per request during the measured run, else 0. With LOAD_LOG=1 it also
# appends "NAME mean_log_wait_us records_per_commit" for the measured run to LOG_STATS (from jitgate's /metrics).
load() {
  local name="$1" url="$2" header="${3:-}" out="$WORK/$1.load" t0=0 t1=0 before="" after=""
  # A short warm-up opens the pools and fills caches, then the measured run.
  if [ "$TOOL" = wrk ]; then
    "${PIN_LOAD[@]}" wrk -t"$TOOL_THREADS" -c"$CONNECTIONS" -d2s ${header:+-H "$header"} "$url" >/dev/null
  else
    oha -z 2s -c "$CONNECTIONS" --no-tui ${header:+-H "$header"} "$url" >/dev/null
  fi
  [ -z "${LOAD_PID:-}" ] || t0=$(cpu_ticks "$LOAD_PID")
  [ "${LOAD_LOG:-0}" = 0 ] || before=$(log_counters)
  local cores0 pg0
  cores0=$(core_ticks)
  pg0=$(pg_ticks)
  local perf_pid=""
  if [ -n "$PERF_DIR" ] && [ -n "${LOAD_PID:-}" ] && [ "$name" != passthrough ]; then
    "${PIN_LOAD[@]}" perf record -q -F 1999 ${PERF_CALLGRAPH:--g} -p "$LOAD_PID" -o "$PERF_DIR/$name.data" -- sleep "$DURATION" \
      >"$WORK/$name.perf.log" 2>&1 &
    perf_pid=$!
  fi
  if [ "$TOOL" = wrk ]; then
    "${PIN_LOAD[@]}" wrk -t"$TOOL_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency ${header:+-H "$header"} "$url" >"$out"
  else
    oha -z "${DURATION}s" -c "$CONNECTIONS" --no-tui --json ${header:+-H "$header"} "$url" >"$out"
  fi
  [ -z "${LOAD_PID:-}" ] || t1=$(cpu_ticks "$LOAD_PID")
  [ "${LOAD_LOG:-0}" = 0 ] || after=$(log_counters)
  local cores1 pg1
  cores1=$(core_ticks)
  pg1=$(pg_ticks)
  [ -z "$perf_pid" ] || wait "$perf_pid" || echo "perf record failed for $name: see $WORK/$name.perf.log" >&2
  local result
  if [ "$TOOL" = wrk ]; then
    result=$(awk -v name="$name" '
      function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
      /Requests\/sec:/ { rps = $2 }
      / requests in / { total = $1 }
      /^ +50%/ { p50 = ms($2) }
      /^ +99%/ { p99 = ms($2) }
      /Non-2xx or 3xx responses:/ { bad = $5 }
      END { printf "%s %.0f %.3f %.3f %d %d\n", name, rps, p50, p99, bad + 0, total + 0 }' "$out")
  else
    result=$(python3 - "$name" "$out" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
codes = d.get("statusCodeDistribution", {})
bad = sum(n for c, n in codes.items() if not str(c).startswith("2"))
total = sum(codes.values())
p = d["latencyPercentiles"]
print(f'{name} {d["summary"]["requestsPerSec"]:.0f} {p["p50"]*1000:.3f} {p["p99"]*1000:.3f} {bad} {total}')
PY
)
  fi
  if [ -n "$before" ]; then
    LOG_STATS+=("$name $(awk -v a="$before" -v b="$after" 'BEGIN { split(a, x, " "); split(b, y, " ");
      n = y[2] - x[2]; c = y[3] - x[3]; k = y[4] - x[4];
      printf "%.0f %.1f", (n > 0 ? (y[1] - x[1]) / n * 1e6 : 0), (k > 0 ? c / k : 0) }')")
  fi
  read -r rname rps p50 p99 bad total <<<"$result"
  CORE_STATS+=("$name $(awk -v a="$cores0" -v b="$cores1" -v p0="$pg0" -v p1="$pg1" -v n="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    k = split(a, x, " "); split(b, y, " "); out = "";
    for (i = 1; i < k; i += 2) { t = y[i+1] - x[i+1]; out = out sprintf("cpu%d=%.0f%% ", (i - 1) / 2, (t > 0 ? (y[i] - x[i]) / t * 100 : 0)) }
    printf "%s postgres=%.1f", out, (n > 0 ? (p1 - p0) / hz / n * 1e6 : 0) }')")
  awk -v r="$rname $rps $p50 $p99 $bad" -v t="$((t1 - t0))" -v n="$total" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%s %.1f\n", r, (n > 0 ? t / hz / n * 1e6 : 0) }'
}

# load_rate NAME URL QPS [HEADER]: open loop, QPS offered in total; prints "NAME req/s p50 p99 non2xx" (ms).
load_rate() {
  local name="$1" url="$2" qps="$3" header="${4:-}" out="$WORK/$1.rate"
  local per=$(( (qps + CONNECTIONS - 1) / CONNECTIONS ))
  hey -z 2s -c "$CONNECTIONS" -q "$per" ${header:+-H "$header"} "$url" >/dev/null
  hey -z "${DURATION}s" -c "$CONNECTIONS" -q "$per" ${header:+-H "$header"} "$url" >"$out"
  awk -v name="$name" '
    /Requests\/sec:/ { rps = $2 }
    /^ +50% in/ { p50 = $3 * 1000 }
    /^ +99% in/ { p99 = $3 * 1000 }
    /^ +\[[0-9]+\]/ { code = substr($1, 2, 3); if (code !~ /^2/) bad += $2 }
    END { printf "%s %.0f %.3f %.3f %d\n", name, rps, p50, p99, bad + 0 }' "$out"
}

RESULTS=()
RATE_RESULTS=()
LOG_STATS=()
CORE_STATS=()   # "NAME cpu0=B% cpu1=B% postgres=US": each core busy during the measured run, the local PostgreSQL server's CPU µs/req
start upstream "$WORK/upstream.log" "${PIN_LOAD[@]}" "$BIN/upstream" --listen "$UPSTREAM_ADDR" --threads "$UPSTREAM_THREADS" --delay-us "$UPSTREAM_DELAY_US" >/dev/null
start passthrough "$WORK/passthrough.log" "${PIN_PROXY[@]}" "$BIN/passthrough" --listen "$PASSTHROUGH_ADDR" --upstream "http://$UPSTREAM_ADDR" >/dev/null
PASSTHROUGH_PID="${PIDS[${#PIDS[@]}-1]}"
wait_http "http://$PASSTHROUGH_ADDR$REQUEST_PATH"
LOAD_PID="$PASSTHROUGH_PID" load passthrough "http://$PASSTHROUGH_ADDR$REQUEST_PATH" >"$WORK/result"
RESULTS+=("$(cat "$WORK/result")")

# rss PID: resident and peak resident memory in MB, from /proc.
rss() {
  awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { printf "%.1f %.1f", r / 1024, h / 1024 }' "/proc/$1/status"
}

# storm FILE SECONDS: rewrites FILE (rename-over, a new revision each time) every 200 ms for SECONDS.
storm() {
  local file="$1" end=$((SECONDS + $2)) n=0
  cp "$file" "$WORK/storm.orig"
  while [ "$SECONDS" -lt "$end" ]; do
    n=$((n + 1))
    { cat "$WORK/storm.orig"; echo "// reload storm $n"; } >"$file.tmp"
    mv "$file.tmp" "$file"
    sleep 0.2
  done
  cp "$WORK/storm.orig" "$file.tmp"; mv "$file.tmp" "$file"
}

MEM=()
STORM_NOTE=""
if [ "$BASELINE_ONLY" = 0 ]; then
  mkdir -p "$WORK/bundles" && cp -r "$ROOT/policies/quickstart-cedar" "$WORK/bundles/quickstart"
  "$BIN/seed_grants" --store "$WORK/jitgate.db" --count "$GRANTS" >/dev/null
  if [ -n "$POSTGRES" ]; then
    # The same grants in a database of the run's own on that server.
    PG_DB="jitgate_load_$$"
    psql -q "$POSTGRES" -c "CREATE DATABASE $PG_DB" >/dev/null
    STORE_URL="${POSTGRES%/*}/$PG_DB"
    "$BIN/seed_grants" --store "$STORE_URL" --count "$GRANTS" >/dev/null
    MODES="${MODES/on/on pg}"
    if [ "${#PIN_LOAD[@]}" -gt 0 ]; then
      # New backends inherit the postmaster's affinity; the cleanup gives every core back.
      PG_PINNED="$(pgrep -x postgres || true)"
      for pid in $PG_PINNED; do taskset -a -p -c 0 "$pid" >/dev/null 2>&1 || true; done
    fi
  fi
  start jwks "$WORK/jwks.log" "${PIN_LOAD[@]}" "$BIN/jwks" --listen "$JWKS_ADDR" --token-out "$WORK/token" \
    --issuer "$ISSUER" --audience "$AUDIENCE" >/dev/null
  TOKEN="${JITGATE_TOKEN:-$(cat "$WORK/token")}"
  ROUND_RATIOS=()
  for round in $(seq "$ROUNDS"); do
  order="$MODES"
  # Every other round backwards, so that a machine drifting during the rounds does not favour one mode.
  [ $((round % 2)) = 1 ] || order="$(echo "$MODES" | tr ' ' '\n' | tac | tr '\n' ' ')"
  declare -A ROUND_RPS=()
  for log in $order; do
    jitgate_config "$log" >"$WORK/jitgate.toml"
    "${PIN_PROXY[@]}" "$BIN/jitgate" serve --config "$WORK/jitgate.toml" >"$WORK/jitgate-$log.log" 2>&1 &
    JPID=$!
    PIDS+=("$JPID")
    wait_http "http://$JITGATE_ADMIN_ADDR/healthz"
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -X "$REQUEST_METHOD" "http://$JITGATE_ADDR$REQUEST_PATH")
    [ "$status" = 200 ] || { echo "jitgate answered $status to the measured request (log $log); see $WORK/jitgate-$log.log" >&2; KEEP=1; exit 1; }
    # Not in $(...): load appends to LOG_STATS, which a subshell would lose.
    LOAD_PID="$JPID" LOAD_LOG=$([ "$log" = off ] && echo 0 || echo 1) \
      load "jitgate-log-$log" "http://$JITGATE_ADDR$REQUEST_PATH" "Authorization: Bearer $TOKEN" >"$WORK/result"
    RESULTS+=("$(cat "$WORK/result")")
    read -r _ ROUND_RPS[$log] _ <"$WORK/result"
    MEM+=("jitgate-log-$log $(rss "$JPID")")
    if [ "$log" = on ] && [ "$RATE" != off ] && [ "$round" = 1 ]; then
      if ! command -v hey >/dev/null; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get install -y hey >/dev/null 2>&1 || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y hey >/dev/null; }
      fi
      if [ "$RATE" = auto ]; then
        read -r _ jrps _ <<<"${RESULTS[${#RESULTS[@]}-1]}"
        QPS=$(( jrps / 2 ))
      else
        QPS="$RATE"
      fi
      RATE_RESULTS+=("$(load_rate "passthrough@$QPS" "http://$PASSTHROUGH_ADDR$REQUEST_PATH" "$QPS")")
      RATE_RESULTS+=("$(load_rate "jitgate-log-on@$QPS" "http://$JITGATE_ADDR$REQUEST_PATH" "$QPS" "Authorization: Bearer $TOKEN")")
    fi
    if [ "$log" != on ] && [ "$log" != pg ] && [ -n "${QPS:-}" ] && [ "$round" = 1 ]; then
      RATE_RESULTS+=("$(load_rate "jitgate-log-$log@$QPS" "http://$JITGATE_ADDR$REQUEST_PATH" "$QPS" "Authorization: Bearer $TOKEN")")
    fi
    if [ "$log" = on ] && [ "$STORM" = 1 ] && [ "$round" = 1 ]; then
      reloads_before=$(curl -s "http://$JITGATE_ADMIN_ADDR/metrics" | awk '/^jitgate_reloads_total\{outcome="live"\}/ { print $2 }')
      storm "$WORK/bundles/quickstart/policies/data-plane.cedar" $((DURATION + 2)) &
      SPID=$!
      PIDS+=("$SPID")
      LOAD_PID="$JPID" load jitgate-storm "http://$JITGATE_ADDR$REQUEST_PATH" "Authorization: Bearer $TOKEN" >"$WORK/result"
      RESULTS+=("$(cat "$WORK/result")")
      wait "$SPID" 2>/dev/null || true
      MEM+=("jitgate-storm $(rss "$JPID")")
      reloads_after=$(curl -s "http://$JITGATE_ADMIN_ADDR/metrics" | awk '/^jitgate_reloads_total\{outcome="live"\}/ { print $2 }')
      STORM_NOTE="reload storm: $(( ${reloads_after:-0} - ${reloads_before:-0} )) new revisions went live during jitgate-storm"
    fi
    kill "$JPID"; wait "$JPID" 2>/dev/null || true
  done
  # This round's ratios against log on: pg (the PostgreSQL store), journal and off.
  line="round $round:"
  for m in pg journal off; do
    [ -n "${ROUND_RPS[$m]:-}" ] && [ -n "${ROUND_RPS[on]:-}" ] && \
      line="$line $m/on=$(awk -v a="${ROUND_RPS[$m]}" -v b="${ROUND_RPS[on]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
  done
  ROUND_RATIOS+=("$line")
  done
fi

echo
echo "tool=$TOOL connections=$CONNECTIONS duration=${DURATION}s request=$REQUEST_METHOD $REQUEST_PATH cores=$(nproc) grants=$GRANTS auth=RS256/JWKS upstream_delay=${UPSTREAM_DELAY_US}us"
printf '%-18s %12s %10s %10s %8s %10s %12s\n' target "req/s" "p50 ms" "p99 ms" non-2xx "vs base" "cpu µs/req"
base_rps=""
for r in "${RESULTS[@]}"; do
  read -r name rps p50 p99 bad cpu <<<"$r"
  [ -n "$base_rps" ] || base_rps="$rps"
  ratio=$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  printf '%-18s %12s %10s %10s %8s %10s %12s\n' "$name" "$rps" "$p50" "$p99" "$bad" "${ratio}x" "$cpu"
done
echo "cpu µs/req: the proxy process's own CPU time (user + system, all threads) per request in the measured run"
for l in "${CORE_STATS[@]}"; do
  read -r name rest <<<"$l"
  printf '%-20s cores busy during the run: %s µs/req\n' "$name" "$rest"
done
for l in "${LOG_STATS[@]}"; do
  read -r name wait per <<<"$l"
  printf '%-20s mean wait for the decision record %6s µs, %6s records a commit\n' "$name" "$wait" "$per"
done
steady_p99=""
for r in "${RESULTS[@]}"; do
  read -r name rps p50 p99 bad <<<"$r"
  [ "$name" = jitgate-log-on ] && steady_p99="$p99"
  [ "$name" = jitgate-storm ] && [ -n "$steady_p99" ] && \
    awk -v a="$p99" -v b="$steady_p99" 'BEGIN { printf "p99 during the reload storm / steady p99: %.2fx\n", (b > 0 ? a / b : 0) }'
done
[ -z "$STORM_NOTE" ] || echo "$STORM_NOTE"
off_rps=""; on_rps=""; journal_rps=""; pg_rps=""
for r in "${RESULTS[@]}"; do
  read -r name rps _ <<<"$r"
  case "$name" in
    jitgate-log-off) off_rps="$rps" ;;
    jitgate-log-on) on_rps="$rps" ;;
    jitgate-log-journal) journal_rps="$rps" ;;
    jitgate-log-pg) pg_rps="$rps" ;;
  esac
done
[ -z "$pg_rps" ] || [ -z "$on_rps" ] || [ "$ROUNDS" != 1 ] || awk -v pg="$pg_rps" -v on="$on_rps" 'BEGIN {
  printf "the PostgreSQL store against the SQLite store (req/s, both with the log on): %.2fx\n", pg / on }'
if [ "$ROUNDS" != 1 ]; then
  printf '%s\n' "${ROUND_RATIOS[@]}"
  for m in pg journal off; do
    vals=$(printf '%s\n' "${ROUND_RATIOS[@]}" | grep -o "$m/on=[0-9.]*" | cut -d= -f2 | sort -n)
    [ -z "$vals" ] || echo "median of $ROUNDS rounds, $m against log on (req/s): $(echo "$vals" | awk '{ v[NR] = $1 } END {
      printf "%.2fx", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')"
  done
fi
[ -z "$off_rps" ] || [ -z "$on_rps" ] || awk -v on="$on_rps" -v j="$journal_rps" -v off="$off_rps" 'BEGIN {
  printf "the log'"'"'s cost (req/s against log off): acknowledge=commit %.2fx, acknowledge=journal %.2fx\n", on / off, j / off }'
if [ "${#RATE_RESULTS[@]}" -gt 0 ]; then
  echo
  echo "open loop (hey), the same offered rate to each:"
  printf '%-24s %12s %10s %10s %8s %12s\n' target "req/s" "p50 ms" "p99 ms" non-2xx "p99 vs base"
  base_p99=""
  for r in "${RATE_RESULTS[@]}"; do
    read -r name rps p50 p99 bad <<<"$r"
    [ -n "$base_p99" ] || base_p99="$p99"
    ratio=$(awk -v a="$p99" -v b="$base_p99" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '%-24s %12s %10s %10s %8s %12s\n' "$name" "$rps" "$p50" "$p99" "$bad" "${ratio}x"
  done
fi
for m in "${MEM[@]}"; do
  read -r name r h <<<"$m"
  printf 'memory after %-16s RSS %6s MB   peak %6s MB\n' "$name" "$r" "$h"
done
