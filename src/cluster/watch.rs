//! The reconciler's caches: kube-runtime watchers and reflectors on Namespaces and Services. The watcher lists
//! again after `410 Gone` or a dropped watch, with kube-runtime's default backoff on errors.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector::ObjectRef};
use tokio::sync::mpsc::UnboundedSender;

/// What a watch saw that the reconciler must look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A Service was added or changed.
    Service { namespace: String, name: String },
    /// A namespace was added or its labels changed: every Service in it.
    Namespace(String),
}

/// The two caches, read by the reconciler.
#[derive(Clone)]
pub struct Caches {
    pub namespaces: Store<Namespace>,
    pub services: Store<Service>,
}

impl Caches {
    pub fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|n| n.metadata.labels.clone().unwrap_or_default())
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(namespace))
    }

    /// Both caches have been listed once.
    pub async fn wait_until_ready(&self) -> bool {
        self.namespaces.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
    }
}

/// Starts both watches; they run (and send triggers) until `triggers` is closed or the task is aborted.
pub fn start(
    client: kube::Client,
    triggers: UnboundedSender<Trigger>,
) -> (Caches, tokio::task::JoinHandle<()>) {
    let (ns_reader, ns_writer) = reflector::store::<Namespace>();
    let (svc_reader, svc_writer) = reflector::store::<Service>();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let svc_api: Api<Service> = Api::all(client);
    let ns_tx = triggers.clone();
    let namespaces = async move {
        let mut seen: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        let stream = watcher::watcher(ns_api, watcher::Config::default())
            .default_backoff()
            .reflect(ns_writer);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(ns) | Event::InitApply(ns)) => {
                    let Some(name) = ns.metadata.name.clone() else {
                        continue;
                    };
                    let labels = ns.metadata.labels.clone().unwrap_or_default();
                    if seen.get(&name) != Some(&labels) {
                        seen.insert(name.clone(), labels);
                        if ns_tx.send(Trigger::Namespace(name)).is_err() {
                            return;
                        }
                    }
                }
                Ok(Event::Delete(ns)) => {
                    if let Some(name) = &ns.metadata.name {
                        seen.remove(name);
                    }
                }
                Ok(Event::Init | Event::InitDone) => {}
                Err(e) => tracing::warn!(error = %e, "watching Namespaces failed; retrying"),
            }
        }
    };
    let services = async move {
        let stream = watcher::watcher(svc_api, watcher::Config::default())
            .default_backoff()
            .reflect(svc_writer);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(svc) | Event::InitApply(svc)) => {
                    let trigger = Trigger::Service {
                        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
                        name: svc.metadata.name.clone().unwrap_or_default(),
                    };
                    if triggers.send(trigger).is_err() {
                        return;
                    }
                }
                Ok(Event::Delete(_) | Event::Init | Event::InitDone) => {}
                Err(e) => tracing::warn!(error = %e, "watching Services failed; retrying"),
            }
        }
    };
    let task = tokio::spawn(async move {
        tokio::join!(namespaces, services);
    });
    (
        Caches {
            namespaces: ns_reader,
            services: svc_reader,
        },
        task,
    )
}
