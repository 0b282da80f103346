#!/bin/sh
# minio-init (one-shot, minio/mc image): the bucket with Object Lock (and so versioning), the
# least-privilege policy deploy/minio/callvault-policy.json and callvault's own MinIO user. The
# root credentials are used here and nowhere else. Idempotent: safe on every `docker compose up`.
# No default retention on the bucket: callvault sets COMPLIANCE retention per object (audit
# exports); recordings must stay deletable for disposal and erasure.
set -eu
umask 077
BUCKET="${BUCKET:-callvault}"
APP_USER="${S3_USER:-callvault-app}"
POLICY="${MINIO_INIT_POLICY:-/deploy/minio/callvault-policy.json}"
SECRETS="${MINIO_INIT_SECRETS:-/run/secrets}"

root_user="$(cat "$SECRETS/minio_root_user")"
root_password="$(cat "$SECRETS/minio_root_password")"
app_secret="$(cat "$SECRETS/minio_callvault_secret")"
# An alias from the environment, so the root password is in no command line and no config file.
export MC_HOST_cv="http://${root_user}:${root_password}@${MINIO_HOST:-minio:9000}"
unset root_password

tries=0
until mc ready cv >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { echo "minio-init: MinIO is not ready" >&2; exit 1; }
    sleep 1
done

# A bucket that exists already keeps its settings: Object Lock cannot be added later.
mc mb --ignore-existing --with-lock "cv/$BUCKET" >/dev/null
mc admin policy create cv callvault "$POLICY" >/dev/null
mc admin user add cv "$APP_USER" "$app_secret" >/dev/null
if ! err="$(mc admin policy attach cv callvault --user "$APP_USER" 2>&1 >/dev/null)"; then
    case "$err" in
    *already*) ;; # attached on an earlier run
    *) echo "minio-init: $err" >&2; exit 1 ;;
    esac
fi
echo "minio-init: bucket $BUCKET (Object Lock) and user $APP_USER with policy callvault ready"
