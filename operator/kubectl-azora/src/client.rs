//! Reaching the API server like kubectl (kubeconfig, context), reading the azora kinds one object at a time
//! (a malformed object is reported, never fatal), and finding out who is asking.

use std::time::Duration;

use anyhow::Context as _;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;

use crate::Connection;

/// Deadline of one API call.
const CALL: Duration = Duration::from_secs(15);

/// A client and the name of the kubeconfig user (who asks, when the server cannot tell).
pub struct Hub {
    /// The client.
    pub client: Client,
    /// The kubeconfig context's user, if any.
    pub user: Option<String>,
    /// The context's namespace (the operator's, for the chaos kill switch), `default` when it names none.
    pub namespace: String,
}

/// Connects as kubectl would: `--kubeconfig` (or $KUBECONFIG), `--context`, else in-cluster.
pub async fn connect(conn: &Connection) -> anyhow::Result<Hub> {
    let opts = KubeConfigOptions {
        context: conn.context.clone(),
        ..Default::default()
    };
    let kubeconfig = match &conn.kubeconfig {
        Some(path) => Some(
            Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?,
        ),
        None => Kubeconfig::read().ok(),
    };
    let (config, user) = match kubeconfig {
        Some(kc) => {
            let context = conn.context.clone().or_else(|| kc.current_context.clone());
            let user = kc
                .contexts
                .iter()
                .find(|c| Some(&c.name) == context.as_ref())
                .and_then(|c| c.context.as_ref())
                .and_then(|c| c.user.clone());
            let config = Config::from_custom_kubeconfig(kc, &opts)
                .await
                .context("loading the kubeconfig")?;
            (config, user)
        }
        None => (
            Config::incluster().context("no kubeconfig found and not running in a cluster")?,
            None,
        ),
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).context("building the API client")?;
    Ok(Hub {
        client,
        user,
        namespace,
    })
}

fn resource<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        &K::group(&()),
        &K::version(&()),
        &K::kind(&()),
    ))
}

/// Every object of a kind; objects that do not parse are named on stderr and left out.
pub async fn list<K>(hub: &Hub) -> anyhow::Result<Vec<K>>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let ar = resource::<K>();
    let api: Api<DynamicObject> = Api::all_with(hub.client.clone(), &ar);
    let list = tokio::time::timeout(CALL, api.list(&ListParams::default()))
        .await
        .with_context(|| format!("listing {}: the API server did not answer in time", ar.plural))?
        .with_context(|| format!("listing {}", ar.plural))?;
    let mut out = Vec::new();
    for o in list.items {
        let name = o.metadata.name.clone().unwrap_or_default();
        match serde_json::to_value(&o).and_then(serde_json::from_value::<K>) {
            Ok(k) => out.push(k),
            Err(e) => eprintln!("warning: {} {name} cannot be read: {e}", ar.kind),
        }
    }
    Ok(out)
}

/// One object of a kind; a clear error when it does not exist.
pub async fn get<K>(hub: &Hub, name: &str) -> anyhow::Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug,
{
    let api: Api<K> = Api::all(hub.client.clone());
    let kind = K::kind(&());
    match tokio::time::timeout(CALL, api.get_opt(name)).await {
        Err(_) => anyhow::bail!("reading {kind} {name}: the API server did not answer in time"),
        Ok(Err(e)) => Err(e).with_context(|| format!("reading {kind} {name}")),
        Ok(Ok(None)) => anyhow::bail!("{kind} {name} does not exist"),
        Ok(Ok(Some(k))) => Ok(k),
    }
}

/// A JSON merge patch of an object's spec or metadata (never its status: the operator writes that).
pub async fn merge<K>(hub: &Hub, name: &str, patch: serde_json::Value) -> anyhow::Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug,
{
    let api: Api<K> = Api::all(hub.client.clone());
    let kind = K::kind(&());
    let pp = PatchParams {
        field_manager: Some("kubectl-azora".into()),
        ..PatchParams::default()
    };
    tokio::time::timeout(CALL, api.patch(name, &pp, &Patch::Merge(&patch)))
        .await
        .with_context(|| format!("changing {kind} {name}: the API server did not answer in time"))?
        .with_context(|| format!("changing {kind} {name}"))
}

/// Creates an object (the operator carries it out, like any declared Backup or Restore).
pub async fn create<K>(hub: &Hub, obj: &K) -> anyhow::Result<K>
where
    K: Resource<DynamicType = ()> + serde::Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let api: Api<K> = Api::all(hub.client.clone());
    let kind = K::kind(&());
    let pp = kube::api::PostParams {
        field_manager: Some("kubectl-azora".into()),
        ..Default::default()
    };
    tokio::time::timeout(CALL, api.create(&pp, obj))
        .await
        .with_context(|| format!("creating a {kind}: the API server did not answer in time"))?
        .with_context(|| format!("creating a {kind}"))
}

/// Who is asking: the authenticated user as the API server sees it (SelfSubjectReview, Kubernetes 1.28+),
/// else the kubeconfig context's user, else the local login.
pub async fn who(hub: &Hub) -> String {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: Api<SelfSubjectReview> = Api::all(hub.client.clone());
    let review = SelfSubjectReview::default();
    if let Ok(Ok(r)) = tokio::time::timeout(
        Duration::from_secs(5),
        api.create(&kube::api::PostParams::default(), &review),
    )
    .await
        && let Some(name) = r.status.and_then(|s| s.user_info).and_then(|u| u.username)
    {
        return name;
    }
    hub.user
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}
