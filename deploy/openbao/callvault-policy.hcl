# The token policy of callvault on OpenBao / Vault Transit (bao-init writes it as "callvault").
# @MOUNT@ is the Transit mount (CALLVAULT_TRANSIT_MOUNT); "callvault-" is the provider's key
# prefix. callvault creates its own keys: <prefix>-epoch, one derived AES key per tenant
# (<prefix>-t-*, <prefix>-h-*), <prefix>-audit-signing (ed25519) and <prefix>-pseudonym (hmac).
# No export, no backup, no config of other keys, nothing outside the mount; delete only on
# tenant keys (tenant offboarding deletes a tenant's key once none of its wraps is left).

# Enumerate tenant keys (rotate and retire walk them).
path "@MOUNT@/keys" {
  capabilities = ["list"]
}

# Create and read its keys; rotate, raise min versions (config) and trim retired versions.
path "@MOUNT@/keys/callvault-*" {
  capabilities = ["create", "read", "update"]
}

# The same on tenant keys, plus delete (the most specific path wins, so it repeats the rest).
path "@MOUNT@/keys/callvault-t-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "@MOUNT@/keys/callvault-h-*" {
  capabilities = ["create", "read", "update", "delete"]
}

# Wrap, unwrap and rewrap DEKs under tenant keys (the DEK never leaves on rewrap).
path "@MOUNT@/encrypt/callvault-*" {
  capabilities = ["update"]
}
path "@MOUNT@/decrypt/callvault-*" {
  capabilities = ["update"]
}
path "@MOUNT@/rewrap/callvault-*" {
  capabilities = ["update"]
}

# Sign audit checkpoints; keyed pseudonyms of owners.
path "@MOUNT@/sign/callvault-audit-signing" {
  capabilities = ["update"]
}
path "@MOUNT@/hmac/callvault-pseudonym" {
  capabilities = ["update"]
}
