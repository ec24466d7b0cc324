//! Publishing Kubernetes Events about our cluster-scoped objects (IO), through the shared recorder.
//! Current API servers take a cluster-scoped `regarding` with no namespace (the Event lives in `default`);
//! 1.20 insists the two namespaces match, so on that refusal the Event is sent again regarding `default`.
//! Event text never contains secret values (callers only pass names, reasons and numbers).
//!
//! The recorder counts a repeat of the same Event (object, type, reason, action **and note**) within six
//! minutes as a series of the first (`series.count`), like client-go. kube's own recorder leaves the note
//! out of that key, so a `FailoverDecided africa -> europe` followed by `europe -> africa` showed the first
//! note twice: the on-call engineer read the wrong direction. Here a different note is a new Event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
pub use kube::runtime::events::EventType;
use tracing::warn;

use crate::context::Context;

/// How long a repeated Event is counted in the first one's series instead of being created again.
const SERIES_TTL: Duration = Duration::from_secs(360);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    type_: &'static str,
    action: String,
    reason: String,
    note: String,
    regarding: (Option<String>, Option<String>, Option<String>, Option<String>),
}

#[derive(Clone, Debug)]
struct Seen {
    name: String,
    namespace: String,
    count: i32,
    at: Instant,
}

/// Publishes Events as `reporting_controller` / `reporting_instance`, repeats counted as series.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    controller: String,
    instance: String,
    seen: Arc<Mutex<HashMap<Key, Seen>>>,
    /// The API server refused a cluster-scoped `regarding` without a namespace once (1.20): every later
    /// Event is sent regarding `default` at once instead of being refused first.
    regarding_default: Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    /// A recorder for `controller` (e.g. `azora-operator`), instance `instance` (the replica's identity).
    pub fn new(client: kube::Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.into(),
            seen: Arc::default(),
            regarding_default: Arc::default(),
        }
    }

    /// Publishes one Event regarding `reference`, or counts it in the series of the same Event made less
    /// than six minutes ago.
    pub async fn publish(
        &self,
        type_: EventType,
        reason: &str,
        note: &str,
        action: &str,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = Key {
            type_,
            action: action.into(),
            reason: reason.into(),
            note: note.into(),
            regarding: (
                reference.kind.clone(),
                reference.namespace.clone(),
                reference.name.clone(),
                reference.uid.clone(),
            ),
        };
        let before = self.seen.lock().ok().and_then(|mut m| {
            m.retain(|_, s| s.at.elapsed() < SERIES_TTL);
            m.get(&key).cloned()
        });
        let now = jiff::Timestamp::now();
        if let Some(s) = before {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &s.namespace);
            let count = s.count + 1;
            let patch = serde_json::json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match api
                .patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.remember(
                        key,
                        Seen {
                            count,
                            at: Instant::now(),
                            ..s
                        },
                    );
                    return Ok(());
                }
                // Gone meanwhile (Events expire): made again below.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let namespace = reference.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            reference.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note.into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(type_.into()),
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            ..K8sEvent::default()
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        self.remember(
            key,
            Seen {
                name,
                namespace,
                count: 1,
                at: Instant::now(),
            },
        );
        Ok(())
    }

    fn remember(&self, key: Key, seen: Seen) {
        if let Ok(mut m) = self.seen.lock() {
            m.insert(key, seen);
        }
    }
}

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
    let learned = &ctx.recorder.regarding_default;
    if learned.load(std::sync::atomic::Ordering::Relaxed) {
        reference.namespace = Some("default".into());
    }
    match ctx
        .recorder
        .publish(type_, reason, note, action, &reference)
        .await
    {
        Ok(()) => {}
        Err(kube::Error::Api(s))
            if s.code == 422 && s.message.contains("namespace") && reference.namespace.is_none() =>
        {
            learned.store(true, std::sync::atomic::Ordering::Relaxed);
            reference.namespace = Some("default".into());
            if let Err(e) = ctx
                .recorder
                .publish(type_, reason, note, action, &reference)
                .await
            {
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
