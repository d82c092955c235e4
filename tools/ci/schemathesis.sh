#!/usr/bin/env bash
# The admin API against its OpenAPI document: starts the quickstart from the built debug binary, runs schemathesis
# (PyPI, pinned) on schemas/admin-api.openapi.json with a `jitgate dev-token` of the quickstart's key whose groups
# reach every operation (sre: status, reload, shadow; compliance: decisions; payments-approvers and dba: approvals),
# and stops the proxy. Fails on any 5xx and on any answer whose status, media type or body the document
# does not describe. Bounded: ST_MAX_EXAMPLES cases per operation (default 40), ST_MAX_TIME seconds in all
# (default 240), a 10 s timeout per request.
#
#   cargo build -p jitgate && tools/ci/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${JITGATE_BIN:-${CARGO_TARGET_DIR:-target}/debug/jitgate}
venv=${SCHEMATHESIS_VENV:-${CARGO_TARGET_DIR:-target}/schemathesis-venv}
version=4.32.5
[ -x "$bin" ] || { echo "schemathesis: no $bin; build it first (cargo build -p jitgate)" >&2; exit 1; }
bin=$(realpath "$bin")
case "$venv" in /*) ;; *) venv=$PWD/$venv ;; esac
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

state=$(mktemp -d)
pid=
stop() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$state"
}
trap stop EXIT
# The quickstart prints its addresses and tokens; ports 0: free ones, as the banner then says.
RUST_LOG=warn "$bin" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --state-dir "$state/.jitgate" \
  >"$state/banner.txt" 2>"$state/stderr.txt" &
pid=$!
for _ in $(seq 600); do
  grep -q 'decisions tail' "$state/banner.txt" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$state/banner.txt" "$state/stderr.txt" >&2; echo "schemathesis: the proxy exited" >&2; exit 1; }
  sleep 0.1
done
admin=$(sed -n 's|^ *admin *\(http://[^ ]*\).*|\1|p' "$state/banner.txt" | head -n 1)
if [ -z "$admin" ]; then
  cat "$state/banner.txt" >&2
  echo "schemathesis: no admin address in the quickstart banner" >&2
  exit 1
fi
token=$("$bin" dev-token --key-file "$state/.jitgate/dev-signing-key.pem" --issuer jitgate-quickstart \
  --principal 'User::"schemathesis"' --groups sre,compliance,payments-approvers,dba,engineering --ttl 1h)
# A token the proxy refuses would make every operation a 401 and the run pass on nothing.
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$admin/v1/status")
if [ "$status" != 200 ]; then
  echo "schemathesis: GET /v1/status with the minted token answered $status, not 200" >&2
  exit 1
fi
echo "schemathesis: admin API at $admin"

# Run in the scratch folder, and --generation-database none: each run starts afresh, and nothing schemathesis keeps
# (examples, its cache of failures to replay) is left in the repository.
doc=$PWD/schemas/admin-api.openapi.json
cd "$state"
"$venv/bin/schemathesis" run "$doc" \
  --url "$admin" \
  --header "Authorization: Bearer $token" \
  --checks "${ST_CHECKS:-not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance}" \
  --max-examples "${ST_MAX_EXAMPLES:-40}" \
  --max-time "${ST_MAX_TIME:-240}" \
  --request-timeout 10 \
  --workers 1 \
  --seed "${ST_SEED:-17}" \
  --generation-database none \
  --no-color
