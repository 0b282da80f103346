#!/bin/sh
# bao-init (one-shot, openbao image, bao CLI): initialise OpenBao on first start, enable Transit,
# write callvault's token policy and keep a valid callvault token in the callvault-transit volume.
# Idempotent: every `docker compose up` runs it again and it changes only what is missing.
# Nothing secret is printed: the root token and recovery key go to /openbao/init (a volume only
# this service mounts), callvault's token to /run/callvault/transit/token (mode 0400, uid 10001).
set -eu
umask 077
export BAO_ADDR="${BAO_ADDR:-http://openbao:8200}"
MOUNT="${TRANSIT_MOUNT:-transit}"
# Paths and owner are the compose layout; overridable so the script can be tested natively.
STATE="${BAO_INIT_STATE:-/openbao/init}"
OUT="${BAO_INIT_OUT:-/run/callvault/transit}"
POLICY="${BAO_INIT_POLICY:-/deploy/openbao/callvault-policy.hcl}"
CALLVAULT_UID="${CALLVAULT_UID:-10001}"
RENEW_BELOW=2592000 # seconds (30 days): issue a new token when the old one has less left
mkdir -p "$STATE" "$OUT"

field() { # field NAME FILE: a string field of bao's JSON output (no jq in the image)
    sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" "$2" | head -n 1
}

if ! bao status -format=json 2>/dev/null | grep -q '"initialized": *true'; then
    echo "bao-init: initialising OpenBao (recovery key and root token -> $STATE/init.json)"
    bao operator init -recovery-shares=1 -recovery-threshold=1 -format=json >"$STATE/init.json.tmp"
    mv "$STATE/init.json.tmp" "$STATE/init.json"
fi
# The static seal unseals by itself; wait for it (exit 0 = initialised and unsealed).
tries=0
until bao status >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { echo "bao-init: OpenBao stays sealed; check openbao_unseal_key" >&2; exit 1; }
    sleep 1
done

BAO_TOKEN="$(field root_token "$STATE/init.json" 2>/dev/null || true)"
[ -n "$BAO_TOKEN" ] || { echo "bao-init: no root token in $STATE/init.json" >&2; exit 1; }
export BAO_TOKEN

if ! bao secrets list -format=json | grep -q "\"$MOUNT/\""; then
    echo "bao-init: enabling Transit at $MOUNT/"
    bao secrets enable -path="$MOUNT" transit >/dev/null
fi
sed "s|@MOUNT@|$MOUNT|g" "$POLICY" | bao policy write callvault - >/dev/null

ttl=0
if [ -s "$OUT/token" ] && [ -s "$STATE/callvault-token.accessor" ]; then
    bao token lookup -accessor -format=json "$(cat "$STATE/callvault-token.accessor")" \
        >"$STATE/lookup.json" 2>/dev/null || true
    ttl="$(sed -n 's/.*"ttl": *\([0-9][0-9]*\).*/\1/p' "$STATE/lookup.json" | head -n 1)"
    rm -f "$STATE/lookup.json"
fi
if [ "${ttl:-0}" -lt "$RENEW_BELOW" ]; then
    echo "bao-init: issuing callvault's Transit token (policy callvault, 1 year)"
    bao token create -orphan -no-default-policy -policy=callvault -ttl=8760h \
        -display-name=callvault -format=json >"$STATE/token.json"
    field client_token "$STATE/token.json" >"$OUT/token.tmp"
    field accessor "$STATE/token.json" >"$STATE/callvault-token.accessor"
    rm -f "$STATE/token.json"
    chown "$CALLVAULT_UID:$CALLVAULT_UID" "$OUT/token.tmp"
    chmod 0400 "$OUT/token.tmp"
    mv "$OUT/token.tmp" "$OUT/token"
fi
echo "bao-init: done"
