//! The reconciler (`lb-l7-webhook reconcile`), seen through its leader-election Lease in the webhook's namespace:
//! installed or not, and alive (renewed within its lease duration) or stale. With a live reconciler, Services the
//! webhook missed are patched without anyone running `backfill`.

use k8s_openapi::api::coordination::v1::Lease;

use super::*;

/// The reconciler's Lease, in the webhook's namespace.
pub const RECONCILER_LEASE: &str = "lb-l7-webhook-reconciler";
/// client-go's leader-election default, for a Lease that does not say (`leaseDurationSeconds` unset).
pub const DEFAULT_LEASE_SECONDS: i64 = 15;

/// What the Lease says about the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciler {
    /// No Lease (404): no reconciler installed. Not a problem: `backfill` does the same job by hand.
    NotInstalled,
    /// Held and renewed within its duration.
    Live {
        holder: String,
        renewed_ago: i64,
        duration: i64,
    },
    /// Installed, but nobody holds the Lease now: released (no holder), never renewed, or not renewed in time.
    Stale {
        holder: Option<String>,
        renewed_ago: Option<i64>,
        duration: i64,
    },
    /// The Lease could not be read (403, ...).
    Unknown(String),
}

/// Reads the Lease at `now` (Unix seconds).
pub fn reconciler_state(lease: &Lookup<Lease>, now: i64) -> Reconciler {
    let lease = match lease {
        Lookup::Found(l) => l,
        Lookup::Missing => return Reconciler::NotInstalled,
        Lookup::Unreadable(why) => return Reconciler::Unknown(why.clone()),
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let duration = spec
        .lease_duration_seconds
        .map_or(DEFAULT_LEASE_SECONDS, i64::from);
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    // Clock skew can put the renewal a little in the future: that is "just now".
    let renewed_ago = spec.renew_time.map(|t| (now - t.0.as_second()).max(0));
    match (holder, renewed_ago) {
        (Some(holder), Some(ago)) if ago <= duration => Reconciler::Live {
            holder,
            renewed_ago: ago,
            duration,
        },
        (holder, renewed_ago) => Reconciler::Stale {
            holder,
            renewed_ago,
            duration,
        },
    }
}

/// `45s`, `12m`, `3h`, `2d`.
pub fn human_seconds(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn lease_at(opts: &DiagnoseOptions) -> String {
    format!("{}/{RECONCILER_LEASE}", opts.webhook_namespace)
}

/// What a stale Lease means, in words.
fn stale_words(holder: &Option<String>, renewed_ago: &Option<i64>, duration: i64) -> String {
    match (holder, renewed_ago) {
        (None, _) => "has no holder (the reconciler released it when it stopped)".to_string(),
        (Some(h), Some(ago)) => format!(
            "was last renewed by {h} {} ago, beyond its {duration}s lease",
            human_seconds(*ago)
        ),
        (Some(h), None) => format!("names {h} but was never renewed"),
    }
}

/// The fix for a reconciler that stopped, as one line.
fn restart_fix(opts: &DiagnoseOptions) -> String {
    format!(
        "kubectl -n {} get pods (the reconciler runs `lb-l7-webhook reconcile`: restart it), or run lb-l7-webhook backfill --dry-run, then lb-l7-webhook backfill",
        opts.webhook_namespace
    )
}

/// Whether a reconciler holds a live Lease, and when it last renewed it. No Lease is fine (ok).
pub fn check_reconciler(reconciler: &Reconciler, opts: &DiagnoseOptions) -> Check {
    let c = Check::build("webhook.reconciler", Group::Webhook, "Reconciler");
    let at = lease_at(opts);
    match reconciler {
        Reconciler::NotInstalled => c.ok(format!(
            "no reconciler installed (no Lease {at}): Services the webhook missed need lb-l7-webhook backfill"
        )),
        Reconciler::Live {
            holder,
            renewed_ago,
            duration,
        } => c.objects(vec![at.clone()]).ok(format!(
            "{holder} holds Lease {at}, renewed {} ago ({duration}s lease): it annotates Services the webhook missed",
            human_seconds(*renewed_ago)
        )),
        Reconciler::Stale {
            holder,
            renewed_ago,
            duration,
        } => c.objects(vec![at.clone()]).warn(
            format!(
                "Lease {at} {}: no reconciler is running, so Services the webhook missed stay unannotated",
                stale_words(holder, renewed_ago, *duration)
            ),
            restart_fix(opts),
        ),
        Reconciler::Unknown(why) => c.warn(
            format!("cannot read Lease {at}, so whether a reconciler runs is unknown: {why}"),
            unreadable_fix(&format!(
                "leases.coordination.k8s.io {RECONCILER_LEASE} in {} (get)",
                opts.webhook_namespace
            )),
        ),
    }
}

/// How `effect.not-annotated` ends when Services are pending: who will annotate them. `None`: nobody (recommend
/// backfill, as without a reconciler).
pub(super) fn pending_handled_by(
    reconciler: &Reconciler,
    opts: &DiagnoseOptions,
) -> Option<String> {
    match reconciler {
        Reconciler::Live {
            holder,
            renewed_ago,
            ..
        } => Some(format!(
            "the reconciler ({holder}, Lease {} renewed {} ago) will patch them",
            lease_at(opts),
            human_seconds(*renewed_ago)
        )),
        _ => None,
    }
}

/// For `effect.not-annotated`: the stale Lease in words, and the fix, when a reconciler is installed but stopped.
pub(super) fn pending_stale(
    reconciler: &Reconciler,
    opts: &DiagnoseOptions,
) -> Option<(String, String)> {
    match reconciler {
        Reconciler::Stale {
            holder,
            renewed_ago,
            duration,
        } => Some((
            format!(
                "the reconciler's Lease {} {}, so nothing patches them",
                lease_at(opts),
                stale_words(holder, renewed_ago, *duration)
            ),
            restart_fix(opts),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    const NOW: i64 = 1_893_456_000;

    fn lease(holder: Option<&str>, renewed: Option<i64>, duration: Option<i32>) -> Lookup<Lease> {
        Lookup::Found(Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                renew_time: renewed.map(|t| {
                    MicroTime(k8s_openapi::jiff::Timestamp::from_second(t).expect("time"))
                }),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        })
    }

    fn opts() -> DiagnoseOptions {
        DiagnoseOptions::at(NOW)
    }

    #[test]
    fn lease_states() {
        assert_eq!(
            reconciler_state(&Lookup::Missing, NOW),
            Reconciler::NotInstalled
        );
        assert_eq!(
            reconciler_state(&lease(Some("pod-a"), Some(NOW - 5), Some(15)), NOW),
            Reconciler::Live {
                holder: "pod-a".into(),
                renewed_ago: 5,
                duration: 15
            }
        );
        // Renewed "in the future" (clock skew) is just now.
        assert!(matches!(
            reconciler_state(&lease(Some("pod-a"), Some(NOW + 3), None), NOW),
            Reconciler::Live {
                renewed_ago: 0,
                duration: 15,
                ..
            }
        ));
        assert!(matches!(
            reconciler_state(&lease(Some("pod-a"), Some(NOW - 3600), Some(15)), NOW),
            Reconciler::Stale {
                renewed_ago: Some(3600),
                ..
            }
        ));
        assert!(matches!(
            reconciler_state(&lease(Some(""), Some(NOW), Some(15)), NOW),
            Reconciler::Stale { holder: None, .. }
        ));
    }

    #[test]
    fn reconciler_check_ok_when_absent_or_live_warn_when_stale() {
        let o = opts();
        let c = check_reconciler(&Reconciler::NotInstalled, &o);
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("no reconciler installed"), "{c:?}");
        let live = reconciler_state(&lease(Some("pod-a"), Some(NOW - 5), Some(15)), NOW);
        let c = check_reconciler(&live, &o);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message.contains(
                "pod-a holds Lease lb-l7-system/lb-l7-webhook-reconciler, renewed 5s ago"
            ),
            "{c:?}"
        );
        let stale = reconciler_state(&lease(Some("pod-a"), Some(NOW - 7200), Some(15)), NOW);
        let c = check_reconciler(&stale, &o);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("last renewed by pod-a 2h ago"), "{c:?}");
        assert!(c.fix.as_deref().is_some_and(|f| f.contains("backfill")));
        let c = check_reconciler(&Reconciler::Unknown("forbidden (HTTP 403)".into()), &o);
        assert_eq!(c.status, Status::Warn);
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_seconds(5), "5s");
        assert_eq!(human_seconds(600), "10m");
        assert_eq!(human_seconds(3 * 3600), "3h");
        assert_eq!(human_seconds(3 * 86_400), "3d");
    }
}
