# Shared by load.sh, sidebyside.sh and instructions.sh: jitgate's configuration for the measured setup (keys as in
# schemas/config.schema.json). Uses the caller's JITGATE_ADDR, JITGATE_ADMIN_ADDR, WORK, ISSUER, AUDIENCE,
# JWKS_ADDR and UPSTREAM_ADDR; with JITGATE_TLS_CERT and JITGATE_TLS_KEY set (PEM files), the data plane serves TLS.

jitgate_config() {  # $1: on|journal|off|anchored|pg (decision log: acknowledged on commit, on journal write, or off;
                    # anchored: on, with signed anchors every ${ANCHOR_RECORDS:-10000} records and every second;
                    # pg: on, with the grant store in PostgreSQL at $STORE_URL instead of the SQLite file)
  local enabled=true acknowledge=commit anchors="" store="path = \"$WORK/jitgate.db\""
  if [ "$1" = pg ]; then store="url = \"$STORE_URL\""; fi
  if [ "$1" = off ]; then enabled=false; fi   # the log off: a benchmarking-only switch (the proxy warns at start)
  if [ "$1" = journal ]; then acknowledge=journal; fi
  if [ "$1" = anchored ]; then
    anchors="anchor_key = \"$WORK/anchor.key\"
anchor_records = ${ANCHOR_RECORDS:-10000}
anchor_interval = \"1s\""
  fi
  cat <<TOML
[server]
listen = "$JITGATE_ADDR"
${JITGATE_TLS_CERT:+
[server.tls]
cert = \"$JITGATE_TLS_CERT\"
key = \"$JITGATE_TLS_KEY\"
}

[admin]
listen = "$JITGATE_ADMIN_ADDR"

[bundle]
path = "$WORK/bundles/quickstart"
watch = true

[store]
$store

[log]
path = "$WORK/decisions-$1.db"   # one per run, so each starts from an empty log
enabled = $enabled
acknowledge = "$acknowledge"
$anchors

[[issuers]]
issuer = "$ISSUER"
audiences = ["$AUDIENCE"]
jwks_url = "http://$JWKS_ADDR/jwks.json"
algorithms = ["RS256"]

[upstreams.payments]
url = "http://$UPSTREAM_ADDR"

[upstreams.billing]
url = "http://$UPSTREAM_ADDR"
TOML
}
