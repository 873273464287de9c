//! Every call to the Kubernetes API goes through this module: paging that honours `--page-size`, the one
//! inventory read of Namespaces and Services that report, backfill, the reconciler and doctor share, and one
//! classification of what the API server answered.
//!
//! - 404 is [`Lookup::Missing`]; 403 and any other API error is [`Lookup::Unreadable`] with the server's
//!   message (data for a report or a check: RBAC may allow one read and not another);
//! - a transport error (API server unreachable, timeout) and 401 (credentials rejected) end the run: there is no
//!   usable API server, see [`ClusterError`].

pub mod events;
pub mod lease;
pub mod patch;
pub mod policy_source;
pub mod target_ports;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::{Api, ListParams, ObjectList};
use lb_l7_core::namespace::{NamespaceContext, Unknown, namespace_of};

/// Items per list call unless `--page-size` says otherwise; large clusters are read page by page.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

/// The result of one read that the caller can live without.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    Found(T),
    /// 404: the object, or for a list the resource type (a CRD that is not installed), does not exist.
    Missing,
    /// Any other answer from the API server, e.g. 403 when RBAC does not allow the read. The text says why.
    Unreadable(String),
}

impl<T> Lookup<T> {
    pub fn found(&self) -> Option<&T> {
        match self {
            Lookup::Found(t) => Some(t),
            _ => None,
        }
    }
}

/// The API server could not be used, or refused a read the command cannot do without.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach the Kubernetes API server while reading {what}")]
    Connection {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the Kubernetes API server rejected the credentials (401) while reading {what}: {message}"
    )]
    Unauthorized { what: String, message: String },
    #[error("{what}: {message}")]
    Refused { what: String, message: String },
}

/// The API server's answer in words: `message (HTTP code reason)`.
pub fn status_text(status: &kube::core::Status) -> String {
    let reason = if status.reason.is_empty() {
        String::new()
    } else {
        format!(" {}", status.reason)
    };
    let message = if status.message.is_empty() {
        "no message".to_string()
    } else {
        status.message.clone()
    };
    format!("{message} (HTTP {}{reason})", status.code)
}

/// One classification of a read's result: see the module documentation.
pub fn lookup<T>(what: &str, result: Result<T, kube::Error>) -> Result<Lookup<T>, ClusterError> {
    match result {
        Ok(v) => Ok(Lookup::Found(v)),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Lookup::Missing),
        Err(kube::Error::Api(status)) if status.code == 401 => Err(ClusterError::Unauthorized {
            what: what.to_string(),
            message: status.message.clone(),
        }),
        Err(kube::Error::Api(status)) => Ok(Lookup::Unreadable(status_text(&status))),
        Err(source) => Err(ClusterError::Connection {
            what: what.to_string(),
            source,
        }),
    }
}

/// Calls `list` page by page (`limit` = `page_size`, following `continue` tokens) until the last page.
pub async fn paged<T, F, Fut>(
    base: ListParams,
    page_size: u32,
    mut list: F,
) -> Result<Vec<T>, kube::Error>
where
    T: Clone,
    F: FnMut(ListParams) -> Fut,
    Fut: Future<Output = Result<ObjectList<T>, kube::Error>>,
{
    let mut out = Vec::new();
    let mut params = base.limit(page_size.max(1));
    loop {
        let page = list(params.clone()).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

/// Lists every object of an API, paged.
pub async fn list_all<K>(
    api: &Api<K>,
    params: ListParams,
    page_size: u32,
) -> Result<Vec<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    paged(params, page_size, |lp| async move { api.list(&lp).await }).await
}

/// A namespaced API over one namespace or all of them.
pub fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Namespace name to its labels.
pub type NamespaceLabelMap = HashMap<String, BTreeMap<String, String>>;

/// The Services of the cluster (all namespaces, or one) and the labels of the Namespaces, read once.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub services: Lookup<Vec<Service>>,
    /// `Unreadable` when RBAC does not allow reading Namespaces: every Service is then evaluated as in a namespace
    /// whose labels are unknown (never opted in), with a warning saying why.
    pub namespaces: Lookup<NamespaceLabelMap>,
}

impl Inventory {
    /// The namespace context for a Service: the one rule report, backfill, the reconciler and doctor share.
    pub fn context<'a>(&'a self, svc: &'a Service) -> NamespaceContext<'a> {
        namespace_context(namespace_of(&svc.metadata), &self.namespaces)
    }

    /// The Services, or the reason they could not be read.
    pub fn services(&self) -> Result<&[Service], ClusterError> {
        match &self.services {
            Lookup::Found(s) => Ok(s),
            Lookup::Missing => Ok(&[]),
            Lookup::Unreadable(message) => Err(ClusterError::Refused {
                what: "cannot list Services".to_string(),
                message: message.clone(),
            }),
        }
    }
}

/// The namespace context from what was read of Namespaces.
pub fn namespace_context<'a>(
    namespace: &'a str,
    namespaces: &'a Lookup<NamespaceLabelMap>,
) -> NamespaceContext<'a> {
    match namespaces {
        Lookup::Found(map) => match map.get(namespace) {
            Some(labels) => NamespaceContext::known(namespace, labels),
            None => NamespaceContext::unknown(namespace, Unknown::NotInCluster),
        },
        Lookup::Missing | Lookup::Unreadable(_) => {
            NamespaceContext::unknown(namespace, Unknown::Unreadable)
        }
    }
}

/// Reads the Namespaces' labels, then the Services (all namespaces, or `namespace`), each paged by `page_size`
/// (one after the other: the order is the same on every run, which request-level tests rely on). A 403 on either is kept as `Unreadable` for the caller to judge; an unreachable API server or
/// rejected credentials is an error.
pub async fn read_inventory(
    client: &Client,
    namespace: Option<&str>,
    page_size: u32,
) -> Result<Inventory, ClusterError> {
    let services = async {
        let api: Api<Service> = api_for(client, namespace);
        let what = match namespace {
            Some(ns) => format!("Services in namespace {ns}"),
            None => "Services".to_string(),
        };
        lookup(
            &what,
            list_all(&api, ListParams::default(), page_size).await,
        )
    };
    let namespaces = async {
        let api: Api<Namespace> = Api::all(client.clone());
        let result = match namespace {
            Some(name) => match api.get(name).await {
                Ok(n) => Ok(vec![n]),
                // A namespace that does not exist has no Services; its name is simply not in the map.
                Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Vec::new()),
                Err(e) => Err(e),
            },
            None => list_all(&api, ListParams::default(), page_size).await,
        };
        lookup(
            "Namespaces",
            result.map(|list| {
                list.into_iter()
                    .filter_map(|n| {
                        let name = n.metadata.name?;
                        Some((name, n.metadata.labels.unwrap_or_default()))
                    })
                    .collect::<NamespaceLabelMap>()
            }),
        )
    };
    let namespaces = namespaces.await?;
    let services = services.await?;
    Ok(Inventory {
        services,
        namespaces,
    })
}

/// `serve --cert-secret`: its Secret and its webhook configuration's caBundle.
pub mod certs;
