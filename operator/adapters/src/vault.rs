//! A region's Vault (or OpenBao: the same HTTP API) through `vaultrs`: login with Kubernetes auth (a
//! ServiceAccount token OpenBao checks with a TokenReview) or a static token, the token renewed by logging in
//! again before it expires, and the KV v2 calls a rotation needs: metadata, a version's data, the newest
//! version's data with the key's custom metadata in one read, a check-and-set write and the key's custom
//! metadata.
//!
//! Errors carry the HTTP status and Vault's own error strings (which never hold a value) or the kind of
//! transport failure; no request or response body is ever logged or returned.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use vaultrs::api::kv2::requests::{SetSecretMetadataRequest, SetSecretRequestOptions};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// Deadline of one Vault request.
pub const REQUEST: Duration = Duration::from_secs(10);

/// A secret's data: key → value. `Debug` shows the keys only.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretData(pub BTreeMap<String, String>);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// How the operator logs in to a region's Vault.
#[derive(Clone)]
pub enum Auth {
    /// Kubernetes auth: `role` at the auth `mount`, with the ServiceAccount token read from `jwt_file` at
    /// each login (projected tokens are replaced by the kubelet).
    Kubernetes {
        /// Vault role.
        role: String,
        /// Auth mount path.
        mount: String,
        /// File holding the ServiceAccount token.
        jwt_file: PathBuf,
    },
    /// A static token (development).
    Token(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kubernetes { role, mount, .. } => write!(f, "kubernetes(role={role}, mount={mount})"),
            Self::Token(_) => f.write_str("token"),
        }
    }
}

/// Where a region's Vault is and how to log in.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// Address, e.g. `https://vault.lagos.azora.io:8200`.
    pub address: String,
    /// Mount path of the KV v2 engine.
    pub kv_mount: String,
    /// Login.
    pub auth: Auth,
}

impl VaultConfig {
    /// Whether two configs reach the same Vault the same way (a changed token or role makes a new client).
    fn same(&self, other: &Self) -> bool {
        self.address == other.address
            && self.kv_mount == other.kv_mount
            && match (&self.auth, &other.auth) {
                (Auth::Token(a), Auth::Token(b)) => a == b,
                (
                    Auth::Kubernetes {
                        role,
                        mount,
                        jwt_file,
                    },
                    Auth::Kubernetes {
                        role: r2,
                        mount: m2,
                        jwt_file: j2,
                    },
                ) => role == r2 && mount == m2 && jwt_file == j2,
                _ => false,
            }
    }
}

/// What went wrong, by what the caller does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// A request not permitted by the token's policies (HTTP 403).
    #[error("permission denied: {0}")]
    Denied(String),
    /// The login was refused (bad role, a ServiceAccount token the TokenReview rejects, a bad static token).
    #[error("login refused: {0}")]
    LoginDenied(String),
    /// The Vault is sealed (HTTP 503 saying so).
    #[error("vault is sealed")]
    Sealed,
    /// Not reachable in time, or answering with a server error.
    #[error("vault unreachable: {0}")]
    Unreachable(String),
    /// The check-and-set version did not match: someone wrote in between.
    #[error("check-and-set conflict: the secret changed since version {0}")]
    CasConflict(u64),
    /// Anything else Vault refused.
    #[error("vault refused the request: {0}")]
    Refused(String),
}

impl VaultError {
    /// A short reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Denied(_) => "VaultPermissionDenied",
            Self::LoginDenied(_) => "VaultLoginDenied",
            Self::Sealed => "VaultSealed",
            Self::Unreachable(_) => "VaultUnreachable",
            Self::CasConflict(_) => "CasConflict",
            Self::Refused(_) => "VaultRefused",
        }
    }
}

/// Vault's errors for a status code; never a body beyond Vault's own error strings.
fn classify(e: ClientError, cas: Option<u64>) -> VaultError {
    match e {
        ClientError::APIError { code, errors } => {
            let text = errors.join("; ");
            let text: String = text.chars().take(300).collect();
            if code == 503 && text.to_lowercase().contains("sealed") {
                VaultError::Sealed
            } else if code == 403 || code == 401 {
                VaultError::Denied(format!("HTTP {code}: {text}"))
            } else if code == 400 && text.contains("check-and-set") {
                VaultError::CasConflict(cas.unwrap_or_default())
            } else if code >= 500 {
                VaultError::Unreachable(format!("HTTP {code}: {text}"))
            } else {
                VaultError::Refused(format!("HTTP {code}: {text}"))
            }
        }
        ClientError::RestClientError { source } => VaultError::Unreachable(transport(&source)),
        other => VaultError::Refused(other.to_string()),
    }
}

/// A transport failure in words, without the request.
fn transport(e: &impl std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    let s = parts.join(": ");
    s.chars().take(300).collect()
}

/// A key's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvMeta {
    /// Newest version (0: never written).
    pub current_version: u64,
    /// The key's custom metadata.
    pub custom: BTreeMap<String, String>,
}

struct Session {
    client: std::sync::Arc<VaultClient>,
    /// When the token should be replaced (two thirds of its lease); `None`: never expires.
    renew_at: Option<Instant>,
}

/// One region's Vault: a client logged in on demand.
pub struct Vault {
    cfg: VaultConfig,
    session: Mutex<Option<Session>>,
}

/// Installs ring as the process's TLS provider if none is: reqwest is built without a bundled one (the
/// process uses ring, as kube does).
pub fn install_tls_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

fn client(address: &str, token: &str) -> Result<VaultClient, VaultError> {
    install_tls_provider();
    let settings = VaultClientSettingsBuilder::default()
        .address(address)
        .token(token)
        .timeout(Some(REQUEST))
        .build()
        .map_err(|e| VaultError::Refused(format!("vault address {address}: {e}")))?;
    VaultClient::new(settings).map_err(|e| VaultError::Refused(format!("vault client: {}", transport(&e))))
}

async fn deadline<T>(
    f: impl std::future::Future<Output = Result<T, ClientError>>,
    cas: Option<u64>,
) -> Result<T, VaultError> {
    match tokio::time::timeout(REQUEST, f).await {
        Ok(r) => r.map_err(|e| classify(e, cas)),
        Err(_) => Err(VaultError::Unreachable(format!(
            "no answer within {}s",
            REQUEST.as_secs()
        ))),
    }
}

/// A version's data as strings (a value Vault holds as another JSON type in its JSON text).
fn data_of(m: HashMap<String, serde_json::Value>) -> SecretData {
    SecretData(
        m.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect(),
    )
}

impl Vault {
    /// A Vault for `cfg`; nothing is sent until the first call.
    pub fn new(cfg: VaultConfig) -> Self {
        Self {
            cfg,
            session: Mutex::new(None),
        }
    }

    /// Whether this client was made for `cfg`.
    pub fn is_for(&self, cfg: &VaultConfig) -> bool {
        self.cfg.same(cfg)
    }

    /// The server's address.
    pub fn address(&self) -> &str {
        &self.cfg.address
    }

    /// The KV mount.
    pub fn mount(&self) -> &str {
        &self.cfg.kv_mount
    }

    /// Logs in (again) now: checks the credentials. A denied login is `Denied`.
    pub async fn login(&self) -> Result<(), VaultError> {
        let mut s = self.session.lock().await;
        *s = Some(self.new_session().await?);
        Ok(())
    }

    async fn new_session(&self) -> Result<Session, VaultError> {
        match &self.cfg.auth {
            Auth::Token(t) => Ok(Session {
                client: std::sync::Arc::new(client(&self.cfg.address, t)?),
                renew_at: None,
            }),
            Auth::Kubernetes {
                role,
                mount,
                jwt_file,
            } => {
                let jwt = tokio::fs::read_to_string(jwt_file).await.map_err(|e| {
                    VaultError::LoginDenied(format!(
                        "reading the ServiceAccount token {}: {}",
                        jwt_file.display(),
                        e.kind()
                    ))
                })?;
                let anon = client(&self.cfg.address, "")?;
                let started = Instant::now();
                let auth = deadline(
                    vaultrs::auth::kubernetes::login(&anon, mount, role, jwt.trim()),
                    None,
                )
                .await
                .map_err(|e| match e {
                    // A login Vault turns down (bad role, a token the TokenReview rejects).
                    VaultError::Refused(m) | VaultError::Denied(m) => VaultError::LoginDenied(m),
                    other => other,
                })?;
                let renew_at = (auth.lease_duration > 0)
                    .then(|| started + Duration::from_secs(auth.lease_duration * 2 / 3));
                Ok(Session {
                    client: std::sync::Arc::new(client(&self.cfg.address, &auth.client_token)?),
                    renew_at,
                })
            }
        }
    }

    /// Runs `f` with a logged-in client: logs in first when there is no session or its token is due for
    /// renewal, and once more when Vault says the token is no longer good (403 on a session older than the
    /// login).
    async fn with<T, F, Fut>(&self, f: F) -> Result<T, VaultError>
    where
        F: Fn(std::sync::Arc<VaultClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, VaultError>>,
    {
        let c = {
            let mut s = self.session.lock().await;
            let due = s
                .as_ref()
                .is_none_or(|s| s.renew_at.is_some_and(|t| Instant::now() >= t));
            if due {
                *s = Some(self.new_session().await?);
            }
            let sess = s
                .as_ref()
                .ok_or_else(|| VaultError::Refused("no session".into()))?;
            sess.client.clone()
        };
        match f(c).await {
            Err(VaultError::Denied(m)) if matches!(self.cfg.auth, Auth::Kubernetes { .. }) => {
                // The token may have been revoked: one fresh login, then the verdict stands.
                let c = {
                    let mut s = self.session.lock().await;
                    let fresh = self.new_session().await?;
                    let c = fresh.client.clone();
                    *s = Some(fresh);
                    c
                };
                f(c).await.map_err(|e| match e {
                    VaultError::Denied(_) => VaultError::Denied(m.clone()),
                    other => other,
                })
            }
            r => r,
        }
    }

    /// The key's metadata; `None` when it was never written.
    pub async fn meta(&self, path: &str) -> Result<Option<KvMeta>, VaultError> {
        let mount = self.cfg.kv_mount.clone();
        let path = path.to_string();
        self.with(|c| {
            let (mount, path) = (mount.clone(), path.clone());
            async move {
                match deadline(vaultrs::kv2::read_metadata(&*c, &mount, &path), None).await {
                    Ok(m) => Ok(Some(KvMeta {
                        current_version: m.current_version,
                        custom: m.custom_metadata.unwrap_or_default().into_iter().collect(),
                    })),
                    Err(VaultError::Refused(m)) if m.starts_with("HTTP 404") => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// The key's metadata and the data of its newest version, in one read when it can be: `None` when the
    /// key does not exist; the data `None` when the newest version is deleted or destroyed. (A read that
    /// does not carry the key's custom metadata, or finds no readable newest version, is followed by a
    /// metadata read: what it returns is always what `meta` would.)
    pub async fn newest(&self, path: &str) -> Result<Option<(KvMeta, Option<SecretData>)>, VaultError> {
        let mount = self.cfg.kv_mount.clone();
        let owned = path.to_string();
        let read = self
            .with(|c| {
                let req = vaultrs::api::kv2::requests::ReadSecretRequest {
                    mount: mount.clone(),
                    path: owned.clone(),
                    version: None,
                };
                async move {
                    match deadline(vaultrs::api::exec_with_result(&*c, req), None).await {
                        Ok(r) => Ok(Some(r)),
                        Err(VaultError::Refused(m)) if m.starts_with("HTTP 404") => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        if let Some(r) = read
            && let Some(custom) = r.metadata.custom_metadata
            && r.metadata.version > 0
            && !r.metadata.destroyed
            && let Ok(data) = serde_json::from_value::<HashMap<String, serde_json::Value>>(r.data)
        {
            let meta = KvMeta {
                current_version: r.metadata.version,
                custom: custom.into_iter().collect(),
            };
            return Ok(Some((meta, Some(data_of(data)))));
        }
        Ok(self.meta(path).await?.map(|m| (m, None)))
    }

    /// The data of `version`; `None` when that version does not exist or was deleted.
    pub async fn read(&self, path: &str, version: u64) -> Result<Option<SecretData>, VaultError> {
        let mount = self.cfg.kv_mount.clone();
        let path = path.to_string();
        self.with(|c| {
            let (mount, path) = (mount.clone(), path.clone());
            async move {
                match deadline(
                    vaultrs::kv2::read_version::<HashMap<String, serde_json::Value>>(
                        &*c, &mount, &path, version,
                    ),
                    None,
                )
                .await
                {
                    Ok(m) => Ok(Some(data_of(m))),
                    Err(VaultError::Refused(m)) if m.starts_with("HTTP 404") => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Writes `data` as a new version only if the key's newest version is `cas` (0: the key must not
    /// exist); returns the new version.
    pub async fn write(&self, path: &str, data: &SecretData, cas: u64) -> Result<u64, VaultError> {
        let mount = self.cfg.kv_mount.clone();
        let path = path.to_string();
        let cas32 =
            u32::try_from(cas).map_err(|_| VaultError::Refused(format!("version {cas} too large")))?;
        self.with(|c| {
            let (mount, path) = (mount.clone(), path.clone());
            async move {
                deadline(
                    vaultrs::kv2::set_with_options(
                        &*c,
                        &mount,
                        &path,
                        &data.0,
                        SetSecretRequestOptions { cas: cas32 },
                    ),
                    Some(cas),
                )
                .await
                .map(|m| m.version)
            }
        })
        .await
    }

    /// Deletes the key with every version and its metadata (a replica retired from a region the tenant
    /// no longer uses); nothing to do when it is not there.
    pub async fn destroy(&self, path: &str) -> Result<(), VaultError> {
        let mount = self.cfg.kv_mount.clone();
        let path = path.to_string();
        self.with(|c| {
            let (mount, path) = (mount.clone(), path.clone());
            async move {
                match deadline(vaultrs::kv2::delete_metadata(&*c, &mount, &path), None).await {
                    Ok(()) => Ok(()),
                    Err(VaultError::Refused(m)) if m.starts_with("HTTP 404") => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Destroys for good (KV v2 `destroy`) every version of the key older than `below` that still holds
    /// data: the versions of a value that leaked. Returns how many were destroyed; nothing to do when the
    /// key is not there.
    pub async fn destroy_below(&self, path: &str, below: u64) -> Result<usize, VaultError> {
        let mount = self.cfg.kv_mount.clone();
        let path = path.to_string();
        self.with(|c| {
            let (mount, path) = (mount.clone(), path.clone());
            async move {
                let m = match deadline(vaultrs::kv2::read_metadata(&*c, &mount, &path), None).await {
                    Ok(m) => m,
                    Err(VaultError::Refused(m)) if m.starts_with("HTTP 404") => return Ok(0),
                    Err(e) => return Err(e),
                };
                let mut versions: Vec<u64> = m
                    .versions
                    .iter()
                    .filter(|(_, v)| !v.destroyed)
                    .filter_map(|(k, _)| k.parse::<u64>().ok())
                    .filter(|v| *v < below)
                    // Never the key's current version, whatever `below` says (a threshold from another
                    // Vault's numbering — a home that changed during a revocation — must not destroy it).
                    .filter(|v| *v < m.current_version)
                    .collect();
                versions.sort_unstable();
                if versions.is_empty() {
                    return Ok(0);
                }
                let n = versions.len();
                deadline(vaultrs::kv2::destroy_versions(&*c, &mount, &path, versions), None).await?;
                Ok(n)
            }
        })
        .await
    }

    /// Replaces the key's custom metadata (creates the key's metadata when it has none).
    pub async fn set_custom(&self, path: &str, custom: &BTreeMap<String, String>) -> Result<(), VaultError> {
        let mount = self.cfg.kv_mount.clone();
        let path = path.to_string();
        let custom: HashMap<String, String> = custom.clone().into_iter().collect();
        self.with(|c| {
            let (mount, path, custom) = (mount.clone(), path.clone(), custom.clone());
            async move {
                let mut b = SetSecretMetadataRequest::builder();
                b.custom_metadata(custom);
                deadline(vaultrs::kv2::set_metadata(&*c, &mount, &path, Some(&mut b)), None).await
            }
        })
        .await
    }
}
