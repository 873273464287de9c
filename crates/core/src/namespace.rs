//! What is known of a Service's namespace: the one context type every edge passes to [`evaluate`].
//!
//! - The webhook passes [`NamespaceLabels::ScopeApplied`]: the API server has already applied the scope through the
//!   webhook configuration's `namespaceSelector`, so only the exclude list (by name) is checked again.
//! - The report, the backfill, the reconciler and doctor pass [`NamespaceLabels::Known`] when they have read the
//!   Namespace, and [`NamespaceLabels::Unknown`] when they could not: the Service is then judged as in a namespace
//!   without labels (never opted in), and the decision carries a warning that says why. So no edge can call a
//!   Service "selected" that another edge, given the same facts, leaves alone.
//!
//! [`evaluate`]: crate::policy::CompiledPolicy::evaluate

use std::collections::BTreeMap;

/// The namespace a Service without `metadata.namespace` lives in, as the API server defaults it.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace of a Service as the API server sees it: `metadata.namespace`, or `default` when absent or empty.
pub fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// Why a namespace's labels are not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Offline input without a Namespace object for it.
    NotInInput,
    /// The cluster was read and has no such Namespace.
    NotInCluster,
    /// The Namespace list could not be read (403, timeout): nothing is known of any namespace.
    Unreadable,
}

/// The namespace's labels, as far as they are known.
#[derive(Debug, Clone, Copy)]
pub enum NamespaceLabels<'a> {
    /// The API server applied the scope (the webhook): only `excludedNamespaces` is checked by name.
    ScopeApplied,
    /// The namespace's labels, read from the input or the cluster.
    Known(&'a BTreeMap<String, String>),
    /// Not known: judged as a namespace without labels, with a warning saying why.
    Unknown(Unknown),
}

/// A Service's namespace and what is known of it.
#[derive(Debug, Clone, Copy)]
pub struct NamespaceContext<'a> {
    pub name: &'a str,
    pub labels: NamespaceLabels<'a>,
}

impl<'a> NamespaceContext<'a> {
    /// The webhook's context: the API server's `namespaceSelector` has already applied the scope.
    pub fn scope_applied(name: &'a str) -> Self {
        NamespaceContext {
            name,
            labels: NamespaceLabels::ScopeApplied,
        }
    }

    /// Labels read from the input or the cluster.
    pub fn known(name: &'a str, labels: &'a BTreeMap<String, String>) -> Self {
        NamespaceContext {
            name,
            labels: NamespaceLabels::Known(labels),
        }
    }

    /// Labels not known, for the reason given.
    pub fn unknown(name: &'a str, why: Unknown) -> Self {
        NamespaceContext {
            name,
            labels: NamespaceLabels::Unknown(why),
        }
    }

    /// The labels evaluation applies the scope to: `None` when the API server already did.
    pub(crate) fn labels_for_scope(&self) -> Option<&'a BTreeMap<String, String>> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        match self.labels {
            NamespaceLabels::ScopeApplied => None,
            NamespaceLabels::Known(labels) => Some(labels),
            NamespaceLabels::Unknown(_) => Some(&EMPTY),
        }
    }

    /// The warning a decision carries when the labels are not known.
    pub fn warning(&self) -> Option<String> {
        let ns = self.name;
        match self.labels {
            NamespaceLabels::Unknown(Unknown::NotInInput) => Some(format!(
                "namespace {ns} is not in the input (no Namespace object): evaluated as a namespace without labels"
            )),
            NamespaceLabels::Unknown(Unknown::NotInCluster) => Some(format!(
                "namespace {ns} was not found in the cluster: evaluated as a namespace without labels"
            )),
            NamespaceLabels::Unknown(Unknown::Unreadable) => Some(format!(
                "namespace {ns}: Namespaces could not be read, so its labels are unknown: evaluated as a namespace without labels"
            )),
            _ => None,
        }
    }
}
