//! Clients for regional clusters, built from a kubeconfig held in a Secret (IO). Two clients per cluster:
//! one for requests, with short timeouts so a hung cluster fails fast, and one for watches, whose
//! long-polling requests need the default read timeout. The kubeconfig is untrusted input and parsed
//! narrowly: inline credentials only — no `exec` plugin (a command run inside the operator), no
//! `auth-provider`, no file paths (`tokenFile` could hand the operator's own ServiceAccount token to
//! another server; certificate paths read the operator's files), no `proxy-url`. Anything else is refused
//! as `Unsafe` before a client exists.

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
    /// The kubeconfig asks for more than inline credentials (commands, files, proxies).
    #[error("kubeconfig refused: {0}; only inline credentials are accepted")]
    Unsafe(String),
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
    check_inline_only(&kc)?;
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
    w.write_timeout = Some(REQUEST_TIMEOUT);
    // Watches are long polls the server ends within ~5 minutes: a connection silent for longer is dead
    // (black-holed), and the watcher reconnects instead of serving a frozen cache.
    w.read_timeout = Some(Duration::from_secs(330));
    let watches = Client::try_from(w).map_err(|e| RegionalError::Client(e.to_string()))?;
    Ok(RegionalClients {
        requests,
        watches,
        server,
        insecure,
    })
}

impl RegionalError {
    /// Fixed reason for status and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kubeconfig(_) => "InvalidKubeconfig",
            Self::Unsafe(_) => "UnsafeKubeconfig",
            Self::Client(_) => "ClientFailed",
        }
    }
}

/// Refuses everything but inline credentials and server settings (names of the offending entries only).
pub fn check_inline_only(kc: &Kubeconfig) -> Result<(), RegionalError> {
    let mut refused = Vec::new();
    for named in &kc.auth_infos {
        let Some(a) = &named.auth_info else { continue };
        let user = &named.name;
        if a.exec.is_some() {
            refused.push(format!("user {user} runs an exec plugin"));
        }
        if a.auth_provider.is_some() {
            refused.push(format!("user {user} uses an auth-provider"));
        }
        if a.token_file.is_some() {
            refused.push(format!("user {user} reads a token file"));
        }
        if a.client_certificate.is_some() || a.client_key.is_some() {
            refused.push(format!("user {user} reads certificate files"));
        }
    }
    for named in &kc.clusters {
        let Some(c) = &named.cluster else { continue };
        let cluster = &named.name;
        if c.certificate_authority.is_some() {
            refused.push(format!("cluster {cluster} reads a certificate-authority file"));
        }
        if c.proxy_url.is_some() {
            refused.push(format!("cluster {cluster} sends traffic through a proxy"));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(RegionalError::Unsafe(refused.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(user: &str, cluster: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\n\
             clusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n{cluster}\
             users:\n- name: u\n  user:\n{user}"
        )
    }

    async fn build(user: &str, cluster: &str) -> Result<RegionalClients, RegionalError> {
        clients_from_kubeconfig(kubeconfig(user, cluster).as_bytes()).await
    }

    #[tokio::test]
    async fn inline_credentials_are_accepted() {
        let r = build("    token: abc\n", "    insecure-skip-tls-verify: true\n").await;
        assert!(r.is_ok(), "{:?}", r.err());
    }

    #[tokio::test]
    async fn an_exec_plugin_is_refused_before_anything_runs() {
        let marker = std::env::temp_dir().join(format!("azora-exec-{}", std::process::id()));
        let user = format!(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: touch\n      args: [\"{}\"]\n",
            marker.display()
        );
        let err = build(&user, "").await.err().expect("refused");
        assert_eq!(err.reason(), "UnsafeKubeconfig");
        assert!(err.to_string().contains("exec plugin"), "{err}");
        assert!(!marker.exists(), "the exec command ran");
    }

    #[tokio::test]
    async fn file_paths_auth_providers_and_proxies_are_refused() {
        for (user, cluster, what) in [
            (
                "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
                "",
                "token file",
            ),
            (
                "    client-certificate: /etc/ssl/c.pem\n    client-key: /etc/ssl/k.pem\n",
                "",
                "certificate files",
            ),
            ("    auth-provider:\n      name: oidc\n", "", "auth-provider"),
            (
                "    token: abc\n",
                "    certificate-authority: /etc/ssl/ca.pem\n",
                "certificate-authority file",
            ),
            (
                "    token: abc\n",
                "    proxy-url: http://127.0.0.1:3128\n",
                "proxy",
            ),
        ] {
            let err = build(user, cluster).await.err().expect("refused");
            assert_eq!(err.reason(), "UnsafeKubeconfig", "{what}");
            assert!(err.to_string().contains(what), "{err} should name {what}");
        }
    }
}
