#!/usr/bin/env bash
# Instructions per request: the proxy's own work, counted by valgrind (callgrind) rather than timed, so the figure
# does not move with the noise of a shared machine. Where `perf stat -e instructions` works it gives the same kind of
# figure; on machines without hardware counters (VMs) callgrind is the one that does.
#
# The setup is load.sh's (the same benches/config.sh): jitgate with the Cedar quickstart bundle, RS256 tokens from
# the jwks helper with the verified-token cache, GRANTS active grants seeded into the store, the decision log on
# (acknowledge = commit), the same `GET /payments` as alice, in front of the zero-work upstream. jitgate runs under
# callgrind; after a warm-up the counters are zeroed, REQUESTS requests are sent (hey, CONCURRENCY at a time), the
# counters are dumped, and the total over all of jitgate's threads (workers, decision writer, everything) is divided
# by REQUESTS.
#
# usage: benches/instructions.sh [--requests 2000] [--concurrency 8] [--grants 10000] [--bin DIR] [--no-build] [--keep]
#                                [--anchors] [--log on|off|journal] [--postgres URL]
#   --anchors signs the log's head (`[log] anchor_key`, every ANCHOR_RECORDS records, default 10000, and every second):
#   compare with a run without it for the cost of anchoring. --log off runs jitgate with the decision log disabled
#   (a benchmarking-only switch): against a run with it on, the log's share of a request; --log journal
#   acknowledges on the journal write (`acknowledge = "journal"`).
#   --postgres URL (a server, e.g. postgres://postgres@127.0.0.1:5432/test) puts the grant store in a database of the
#   run's own on that server (`[store] url`, created, seeded and dropped here), so the log shipper copies every
#   record into it too: the count waits until the shipper has shipped the last record, and includes its work (the
#   server's own work is in its processes, not counted).
#   --bin DIR takes jitgate and the helpers from DIR (default: the release target folder), e.g. to count a baseline
#   built from another commit into its own folder. --keep keeps the work folder and names the callgrind dump, for
#   `callgrind_annotate` (where the instructions went). Prints one line: `instructions/request N (requests R, ...)`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
REQUESTS=2000
CONCURRENCY=8
GRANTS=10000
BUILD=1
KEEP=0
LOGMODE=on
WARMUP=300
POSTGRES=""

while [ $# -gt 0 ]; do
  case "$1" in
    --requests) REQUESTS="$2"; shift ;;
    --concurrency) CONCURRENCY="$2"; shift ;;
    --grants) GRANTS="$2"; shift ;;
    --bin) BIN="$2"; BUILD=0; shift ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    --anchors) LOGMODE=anchored ;;
    --log) case "$2" in on) ;; off|journal) LOGMODE="$2" ;; *) echo "instructions.sh: --log on|off|journal" >&2; exit 2 ;; esac; shift ;;
    --postgres) POSTGRES="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "instructions.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# INSTR_PORT_BASE moves the five ports, so that two counts can run side by side.
PB=${INSTR_PORT_BASE:-19100}
UPSTREAM_ADDR=127.0.0.1:$PB
JITGATE_ADDR=127.0.0.1:$((PB + 2))
JITGATE_ADMIN_ADDR=127.0.0.1:$((PB + 3))
JWKS_ADDR=127.0.0.1:$((PB + 4))
ISSUER=https://idp.load.test/
AUDIENCE=jitgate-load

for tool in valgrind callgrind_control hey curl; do
  command -v "$tool" >/dev/null || {
    pkg=$tool; [ "$tool" = callgrind_control ] && pkg=valgrind
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "installing $pkg with apt-get" >&2
    $SUDO apt-get install -y "$pkg" >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "$pkg" >/dev/null; }
  }
done
if [ "$BUILD" = 1 ]; then
  cargo build --release -p jitgate -p jitgate-benches --bins
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/jitgate-instr.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -z "${PG_DB:-}" ] || psql -q "$POSTGRES" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
  if [ "$KEEP" = 1 ]; then echo "work folder kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# wait_http URL SECONDS: until URL answers at all (any status).
wait_http() {
  for _ in $(seq 1 $(($2 * 10))); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "no answer from $1 within $2 s" >&2; return 1
}

mkdir -p "$WORK/bundles" && cp -r "$ROOT/policies/quickstart-cedar" "$WORK/bundles/quickstart"
"$BIN/seed_grants" --store "$WORK/jitgate.db" --count "$GRANTS" >/dev/null
if [ -n "$POSTGRES" ]; then
  [ "$LOGMODE" = on ] || { echo "instructions.sh: --postgres goes with the log on (no --anchors, no --log off)" >&2; exit 2; }
  PG_DB="jitgate_instr_$$"
  psql -q "$POSTGRES" -c "CREATE DATABASE $PG_DB" >/dev/null
  STORE_URL="${POSTGRES%/*}/$PG_DB"
  "$BIN/seed_grants" --store "$STORE_URL" --count "$GRANTS" >/dev/null
  LOGMODE=pg
fi
"$BIN/upstream" --listen "$UPSTREAM_ADDR" --threads 1 --delay-us 0 >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
"$BIN/jwks" --listen "$JWKS_ADDR" --token-out "$WORK/token" --issuer "$ISSUER" --audience "$AUDIENCE" \
  >"$WORK/jwks.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/token" ] && break; sleep 0.1; done
TOKEN="$(cat "$WORK/token")"
source "$ROOT/benches/config.sh"
jitgate_config "$LOGMODE" >"$WORK/jitgate.toml"

valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.%p" \
  "$BIN/jitgate" serve --config "$WORK/jitgate.toml" >"$WORK/jitgate.log" 2>&1 &
JPID=$!
PIDS+=("$JPID")
wait_http "http://$JITGATE_ADMIN_ADDR/healthz" 300
URL="http://$JITGATE_ADDR/payments"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$URL")
[ "$status" = 200 ] || { echo "jitgate answered $status to the measured request" >&2; cat "$WORK/jitgate.log" >&2; exit 1; }

hey -n "$WARMUP" -c "$CONCURRENCY" -H "Authorization: Bearer $TOKEN" "$URL" >/dev/null
callgrind_control -z "$JPID" >/dev/null 2>&1
hey -n "$REQUESTS" -c "$CONCURRENCY" -H "Authorization: Bearer $TOKEN" "$URL" >"$WORK/hey.out"
ok=$(awk '/^ +\[200\]/ { print $2 }' "$WORK/hey.out")
[ "${ok:-0}" = "$REQUESTS" ] || { echo "only ${ok:-0} of $REQUESTS requests got 200" >&2; cat "$WORK/hey.out" >&2; exit 1; }
# The decision writer commits the last records before the counters are read: wait until the log file holds them
# all. Read from the file by another process (SQLite in WAL mode), not from jitgate's /metrics, whose rendering
# would be counted with the requests. With --postgres, wait until /metrics says the shipper has shipped them all
# (that run counts a few renderings of /metrics too).
want=$((WARMUP + REQUESTS + 1))
for _ in $(seq 1 600); do
  [ "$LOGMODE" = off ] && break
  if [ "$LOGMODE" = pg ]; then
    committed=$(curl -s "http://$JITGATE_ADMIN_ADDR/metrics" | awk '/^jitgate_log_shipped_seq / { print $2 }')
  else
    committed=$(python3 -c 'import sqlite3, sys
try:
    print(sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True).execute("SELECT count(*) FROM decisions").fetchone()[0])
except Exception:
    print(0)' "$WORK/decisions-$LOGMODE.db")
  fi
  [ "${committed%.*}" -ge "$want" ] 2>/dev/null && break
  sleep 0.1
done
callgrind_control -d "$JPID" >/dev/null 2>&1
# The dump after zeroing is the newest part file; its `summary:`/`totals:` line is the instruction count (Ir).
dump=$(ls -t "$WORK"/callgrind."$JPID".* 2>/dev/null | head -1)
total=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
[ "$KEEP" = 0 ] || echo "callgrind dump: $dump" >&2
awk -v t="$total" -v n="$REQUESTS" -v c="$CONCURRENCY" -v g="$GRANTS" -v m="$LOGMODE" 'BEGIN {
  printf "instructions/request %.0f (requests %d, concurrency %d, grants %d, log %s, all threads, callgrind)\n", t / n, n, c, g, m }'
