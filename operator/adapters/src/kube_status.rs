//! Fenced status writes (IO): server-side apply on `/status` with the full apiVersion/kind envelope, one
//! field manager per controller, and the object's resourceVersion as a precondition so status computed from
//! a stale read is refused (409) instead of overwriting newer state.

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::leader::{Fence, LeaderError};

/// Errors of a status write.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum StatusError {
    /// The fence refused the write.
    #[error("write refused by the leader fence")]
    Fenced(#[source] LeaderError),
    /// The object changed since it was read.
    #[error("object changed since it was read")]
    Conflict(#[source] kube::Error),
    /// The API request failed.
    #[error("status patch failed")]
    Api(#[source] kube::Error),
}

impl StatusError {
    /// Fixed category for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        self.into()
    }
}

/// Writes status for one kind under one field manager.
#[derive(Clone)]
pub struct StatusWriter {
    api: Api<DynamicObject>,
    resource: ApiResource,
    manager: String,
    fence: Fence,
}

impl StatusWriter {
    /// A writer for the cluster-scoped kind `resource`, as field manager `azora-operator/<controller>`.
    pub fn new(client: Client, resource: ApiResource, controller: &str, fence: Fence) -> Self {
        Self {
            api: Api::all_with(client, &resource),
            resource,
            manager: format!("azora-operator/{controller}"),
            fence,
        }
    }

    /// Applies `status` to the object `name` read at `resource_version`.
    pub async fn apply(
        &self,
        name: &str,
        resource_version: Option<&str>,
        status: Value,
    ) -> Result<(), StatusError> {
        self.apply_versioned(name, resource_version, status)
            .await
            .map(|_| ())
    }

    /// Applies `status` to the object `name` read at `resource_version`; returns the object's new
    /// resourceVersion (the precondition of a later write built on this one).
    pub async fn apply_versioned(
        &self,
        name: &str,
        resource_version: Option<&str>,
        status: Value,
    ) -> Result<String, StatusError> {
        self.fence.check().await.map_err(StatusError::Fenced)?;
        let mut metadata = json!({ "name": name });
        if let Some(rv) = resource_version {
            metadata["resourceVersion"] = json!(rv);
        }
        let body = json!({
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            "metadata": metadata,
            "status": status,
        });
        let params = PatchParams::apply(&self.manager).force();
        match self.api.patch_status(name, &params, &Patch::Apply(&body)).await {
            Ok(o) => Ok(o.metadata.resource_version.unwrap_or_default()),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(StatusError::Conflict(kube::Error::Api(s))),
            Err(e) => Err(StatusError::Api(e)),
        }
    }
}
