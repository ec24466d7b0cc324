# The OpenBao/Vault policy the operator needs in every region's Vault, and nothing more: the tenants' KV v2
# paths (data: read and write new versions; metadata: read the version numbers, write the custom metadata
# that claims a rotation, and delete a replica — every version — from a region the tenant is no longer placed
# in; destroy: the versions of a value that leaked, after `kubectl azora rotate --leaked`). Adjust the mount (`secret`) and the prefix (`tenants/`) to the Region's
# spec.vault.kvMount and the tenants' vaultPath values.
#
# Bind it to the operator's ServiceAccount with the Kubernetes auth method, e.g.:
#   bao auth enable kubernetes
#   bao write auth/kubernetes/config kubernetes_host=https://<hub-api-server> kubernetes_ca_cert=@ca.crt
#   bao policy write azora-operator regions/vault-policy.hcl
#   bao write auth/kubernetes/role/azora-operator \
#       bound_service_account_names=azora-operator bound_service_account_namespaces=azora-system \
#       token_policies=azora-operator token_ttl=1h
# (the hub's ServiceAccount needs system:auth-delegator there only if OpenBao reviews tokens with the
# caller's own token, as in the tests).

path "secret/data/tenants/*" {
  capabilities = ["create", "update", "read"]
}

path "secret/metadata/tenants/*" {
  capabilities = ["create", "update", "read", "delete"]
}

path "secret/destroy/tenants/*" {
  capabilities = ["update"]
}
