//! Leader election through a `coordination.k8s.io/v1` Lease, with the verbs the chart grants: `get` and `update`
//! on the one Lease, `create` on leases.
//!
//! Why not a crate: kube-lease-manager 0.13 (kube 5) writes the Lease with `patch` (strategic merge and server-side
//! apply), a verb the chart's Role does not grant, and kube-leader-election 0.44 is built on kube 4 (a second kube
//! in the tree). This elector is the client-go algorithm in small: read the Lease; take it when it has no holder,
//! when we hold it, or when its record (holder, renewTime) has not changed for `leaseDurationSeconds` as measured
//! on our own clock (no trust in other machines' clocks); every write is an `update` carrying the resourceVersion
//! that was read, so of two candidates racing for one Lease exactly one wins (the other gets 409).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// The Lease's name; the chart's Role grants `get` and `update` on exactly this name.
pub const LEASE_NAME: &str = "lb-l7-webhook-reconciler";

/// One candidate.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
    /// The last record seen of another holder, and when (our clock) it was first seen.
    observed: Option<(String, Instant)>,
}

fn record_of(spec: &LeaseSpec) -> String {
    format!(
        "{}|{:?}|{:?}",
        spec.holder_identity.as_deref().unwrap_or_default(),
        spec.renew_time.as_ref().map(|t| t.0),
        spec.lease_transitions
    )
}

impl Elector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        identity: String,
        duration: Duration,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            identity,
            duration,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: acquire,
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: acquire or renew. `Ok(true)` when we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = match self.api.get_opt(LEASE_NAME).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.to_string()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(Some(MicroTime(Timestamp::now())), 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == self.identity {
            self.observed = None;
            self.spec(spec.acquire_time.clone(), transitions)
        } else if holder.is_empty() || self.expired(&spec) {
            self.spec(Some(MicroTime(Timestamp::now())), transitions + 1)
        } else {
            return Ok(false);
        };
        let mut lease = current;
        lease.spec = Some(next);
        // `replace` sends the resourceVersion that was read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = None;
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether another holder's record has stood unchanged for its lease duration, on our clock.
    fn expired(&mut self, spec: &LeaseSpec) -> bool {
        let record = record_of(spec);
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.duration);
        match &self.observed {
            Some((seen, since)) if *seen == record => since.elapsed() >= duration,
            _ => {
                self.observed = Some((record, Instant::now()));
                false
            }
        }
    }

    /// Gives the Lease up (on shutdown) so another replica need not wait for it to expire.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        self.api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

/// This pod's identity: `POD_NAME`, else the hostname, else a fixed word.
pub fn identity() -> String {
    if let Ok(n) = std::env::var("POD_NAME")
        && !n.is_empty()
    {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "lb-l7-webhook".to_string())
}

/// The namespace this pod runs in: `POD_NAMESPACE`, else the service account's namespace file.
pub fn own_namespace() -> Option<String> {
    if let Ok(n) = std::env::var("POD_NAMESPACE")
        && !n.is_empty()
    {
        return Some(n);
    }
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
