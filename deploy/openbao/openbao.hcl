# OpenBao for callvault (docker-compose.yml): a real server, not -dev. Integrated (raft) storage
# on the openbao-data volume; it unseals itself at every start with the static key in the
# openbao_unseal_key secret (32 random bytes), so a restart never leaves callvault without keys.
# Guard that key like the data it opens: it belongs outside the host's backups of the volume.

storage "raft" {
  path    = "/openbao/file"
  node_id = "openbao-1"
}

# Plain HTTP on the private "backend" network only (never published). To reach OpenBao across
# hosts, give this listener tls_cert_file/tls_key_file and use transit:https://... in callvault.
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true
}

api_addr      = "http://openbao:8200"
cluster_addr  = "http://openbao:8201"
disable_mlock = true # raft storage; recommended by OpenBao instead of mlock
ui            = false

seal "static" {
  current_key_id = "1"
  current_key    = "file:///run/secrets/openbao_unseal_key"
}

# callvault's token (deploy/openbao/init.sh) lives a year; bao-init replaces it when fewer than
# 30 days remain.
max_lease_ttl     = "8760h"
default_lease_ttl = "768h"
