//! Publishing Kubernetes Events about our cluster-scoped objects (IO), through the shared recorder.
//! Current API servers take a cluster-scoped `regarding` with no namespace (the Event lives in `default`);
//! 1.20 insists the two namespaces match, so on that refusal the Event is sent again regarding `default`.
//! Event text never contains secret values (callers only pass names, reasons and numbers).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::DynamicObject;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use crate::context::Context;

/// Publishes one Event about `obj`.
pub async fn publish(
    ctx: &Context,
    obj: &DynamicObject,
    type_: EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    let mut reference = ObjectReference {
        api_version: obj.types.as_ref().map(|t| t.api_version.clone()),
        kind: obj.types.as_ref().map(|t| t.kind.clone()),
        name: obj.metadata.name.clone(),
        uid: obj.metadata.uid.clone(),
        ..ObjectReference::default()
    };
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: action.into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, &reference).await {
        Ok(()) => {}
        Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("namespace") => {
            reference.namespace = Some("default".into());
            if let Err(e) = ctx.recorder.publish(&event, &reference).await {
                warn!(
                    reason,
                    error = &e as &dyn std::error::Error,
                    "could not publish event"
                );
            }
        }
        Err(e) => warn!(
            reason,
            error = &e as &dyn std::error::Error,
            "could not publish event"
        ),
    }
}
