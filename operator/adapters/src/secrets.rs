//! Secret lookups (IO) in the operator's namespace. Only key names ever leave this module: values are never
//! returned, logged or copied into status.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// Reads which keys Secrets hold.
#[derive(Clone)]
pub struct SecretKeys {
    api: Api<Secret>,
}

impl SecretKeys {
    /// Lookups in `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }

    /// The key names of Secret `name`, or `None` when it does not exist.
    pub async fn keys(&self, name: &str) -> Result<Option<BTreeSet<String>>, kube::Error> {
        let Some(secret) = self.api.get_opt(name).await? else {
            return Ok(None);
        };
        let mut keys: BTreeSet<String> = secret.data.unwrap_or_default().into_keys().collect();
        keys.extend(secret.string_data.unwrap_or_default().into_keys());
        Ok(Some(keys))
    }

    /// The value of one key (e.g. a TSIG secret). The caller must never log, print or store it.
    pub async fn value(&self, name: &str, key: &str) -> Result<Option<Vec<u8>>, kube::Error> {
        let Some(secret) = self.api.get_opt(name).await? else {
            return Ok(None);
        };
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(Some(v.0.clone()));
        }
        Ok(secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|s| s.as_bytes().to_vec()))
    }
}
