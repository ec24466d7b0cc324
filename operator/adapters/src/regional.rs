//! Clients for regional clusters, built from a kubeconfig held in a Secret (IO). Two clients per cluster:
//! one for requests, with short timeouts so a hung cluster fails fast, and one for watches, whose
//! long-polling requests need the default read timeout.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Timeout of one request to a regional cluster.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors building a regional client. Messages never include the kubeconfig's contents.
#[derive(Debug, thiserror::Error)]
pub enum RegionalError {
    /// The Secret's value is not a usable kubeconfig.
    #[error("kubeconfig is not valid: {0}")]
    Kubeconfig(String),
    /// The client could not be built.
    #[error("building the client failed: {0}")]
    Client(String),
}

/// The two clients of one regional cluster, and the server URL (for messages).
#[derive(Clone)]
pub struct RegionalClients {
    /// Requests (3 s connect, 10 s read/write).
    pub requests: Client,
    /// Watches.
    pub watches: Client,
    /// API server URL.
    pub server: String,
    /// Whether the kubeconfig turns off TLS verification (`insecure-skip-tls-verify`).
    pub insecure: bool,
}

/// Builds the clients from kubeconfig bytes.
pub async fn clients_from_kubeconfig(bytes: &[u8]) -> Result<RegionalClients, RegionalError> {
    let text = std::str::from_utf8(bytes).map_err(|_| RegionalError::Kubeconfig("not UTF-8".into()))?;
    // Parse errors from serde_yaml may quote the input: report only the location.
    let kc = Kubeconfig::from_yaml(text)
        .map_err(|_| RegionalError::Kubeconfig("not a kubeconfig document".into()))?;
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| RegionalError::Kubeconfig(e.to_string()))?;
    let server = cfg.cluster_url.to_string();
    let insecure = cfg.accept_invalid_certs;
    let mut req = cfg.clone();
    req.connect_timeout = Some(Duration::from_secs(3));
    req.read_timeout = Some(REQUEST_TIMEOUT);
    req.write_timeout = Some(REQUEST_TIMEOUT);
    let requests = Client::try_from(req).map_err(|e| RegionalError::Client(e.to_string()))?;
    let mut w = cfg;
    w.connect_timeout = Some(Duration::from_secs(3));
    let watches = Client::try_from(w).map_err(|e| RegionalError::Client(e.to_string()))?;
    Ok(RegionalClients {
        requests,
        watches,
        server,
        insecure,
    })
}
