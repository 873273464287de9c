//! The reconciler's pure part: what to do with one Service, the revert patch, the work queue, the token bucket
//! and the backoff. No IO; the clock is passed in.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use json_patch::jsonptr::PointerBuf;
use json_patch::{Patch, PatchOperation, RemoveOperation, TestOperation};
use k8s_openapi::api::core::v1::Service;
use lb_l7_core::namespace::{NamespaceContext, namespace_of};
use lb_l7_core::policy::{
    ALGORITHM_ANNOTATION, CompiledPolicy, Decision, DecisionKind, ENABLED_VALUE,
    MATCHED_BY_ANNOTATION, Mode,
};
use serde_json::Value;
use tokio::time::Instant;

/// A Service's key: namespace and name.
pub type Key = (String, String);

pub fn key_of(svc: &Service) -> Key {
    (
        namespace_of(&svc.metadata).to_string(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// What to do with one Service.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Nothing,
    /// Add the annotations (backfill's guarded patch).
    Enable(Decision),
    /// The policy is in dry-run mode: log, count and record an Event, send nothing.
    WouldEnable(Decision),
    /// `--revert`: remove what this tool added; `why` is the decision that no longer selects the Service.
    Revert {
        patch: Patch,
        removed: Vec<String>,
        why: Decision,
    },
}

/// The decision for one Service, from the policy and its namespace's labels in the cache.
///
/// `namespace_labels` is `None` when the namespace is not in the cache: such a Service is never patched. A
/// namespace in the policy's `excludedNamespaces` is never touched, whatever else holds.
pub fn plan(
    policy: &CompiledPolicy,
    svc: &Service,
    namespace_labels: Option<&BTreeMap<String, String>>,
    revert: bool,
) -> Action {
    let ns = namespace_of(&svc.metadata);
    if policy.policy.is_excluded(ns) {
        return Action::Nothing;
    }
    let Some(labels) = namespace_labels else {
        return Action::Nothing;
    };
    let context = NamespaceContext::known(ns, labels);
    let decision = policy.evaluate(svc, context);
    let dry_run = policy.policy.mode == Mode::DryRun;
    match decision.kind {
        DecisionKind::Enable if dry_run => Action::WouldEnable(decision),
        DecisionKind::Enable => Action::Enable(decision),
        _ if !revert || dry_run => Action::Nothing,
        _ => {
            let Some((patch, removed, stripped)) = revert_patch(policy, svc) else {
                return Action::Nothing;
            };
            // Judge the Service as it would be without what we added: still selected means nothing to undo.
            let why = policy.evaluate(&stripped, context);
            if why.kind == DecisionKind::Enable {
                Action::Nothing
            } else {
                Action::Revert {
                    patch,
                    removed,
                    why,
                }
            }
        }
    }
}

fn annotation_pointer(key: &str) -> PointerBuf {
    let mut p = PointerBuf::from_tokens(["metadata", "annotations"]);
    p.push_back(key);
    p
}

/// The rule named in a `matched-by` reason (`... matches rule 'NAME'`).
fn rule_in_reason(reason: &str) -> Option<&str> {
    let start = reason.find("rule '")? + "rule '".len();
    let len = reason[start..].find('\'')?;
    Some(&reason[start..start + len])
}

/// The patch that removes what this tool added to a Service, recognised by `lb-l7-webhook/matched-by`: that
/// annotation; the policy's annotation key when it still says `enabled`; the algorithm annotation only when the
/// rule `matched-by` names still exists and sets the very value the Service has (otherwise someone else may
/// have written it, and it stays). Each removal is guarded by a `test` of the value, so nothing a person changed
/// since is removed. Also returns the keys removed and the Service without them. `None` without `matched-by`.
pub fn revert_patch(
    policy: &CompiledPolicy,
    svc: &Service,
) -> Option<(Patch, Vec<String>, Service)> {
    let annotations = svc.metadata.annotations.as_ref()?;
    let matched_by = annotations.get(MATCHED_BY_ANNOTATION)?;
    let key = policy.policy.annotation_key.as_str();
    let mut remove: Vec<(String, String)> = Vec::new();
    if let Some(v) = annotations.get(key)
        && v == ENABLED_VALUE
    {
        remove.push((key.to_string(), v.clone()));
    }
    if let Some(v) = annotations.get(ALGORITHM_ANNOTATION)
        && let Some(rule) = rule_in_reason(matched_by)
        && policy
            .policy
            .rules
            .iter()
            .any(|r| r.name == rule && r.algorithm.is_some_and(|a| a.as_str() == v))
    {
        remove.push((ALGORITHM_ANNOTATION.to_string(), v.clone()));
    }
    remove.push((MATCHED_BY_ANNOTATION.to_string(), matched_by.clone()));
    let mut ops = Vec::with_capacity(remove.len() * 2);
    for (k, v) in &remove {
        ops.push(PatchOperation::Test(TestOperation {
            path: annotation_pointer(k),
            value: Value::String(v.clone()),
        }));
    }
    for (k, _) in &remove {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: annotation_pointer(k),
        }));
    }
    let mut stripped = svc.clone();
    if let Some(a) = stripped.metadata.annotations.as_mut() {
        for (k, _) in &remove {
            a.remove(k);
        }
    }
    Some((
        Patch(ops),
        remove.into_iter().map(|(k, _)| k).collect(),
        stripped,
    ))
}

/// A FIFO of Service keys without duplicates: a key waiting once is looked at once.
#[derive(Debug, Default)]
pub struct WorkQueue {
    order: VecDeque<Key>,
    waiting: HashSet<Key>,
}

impl WorkQueue {
    pub fn push(&mut self, key: Key) -> bool {
        if self.waiting.insert(key.clone()) {
            self.order.push_back(key);
            true
        } else {
            false
        }
    }

    pub fn pop(&mut self) -> Option<Key> {
        let k = self.order.pop_front()?;
        self.waiting.remove(&k);
        Some(k)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up. A rate of 0 means no limit.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token: `None` when one was there, else how long to wait before one is (then taken).
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            None
        } else {
            Some(Duration::from_secs_f64(-self.tokens / self.rate))
        }
    }
}

/// Exponential backoff for one Service after an error: `base`, doubled per attempt, at most `max`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(20));
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_l7_core::policy::Policy;
    use serde_json::json;

    fn policy(extra: &str) -> CompiledPolicy {
        Policy::from_yaml(&format!(
            "scope: namespace-opt-in\n{extra}rules: [{{name: grpc-ports, ports: {{}}, algorithm: least_request}}]\n"
        ))
        .expect("policy")
        .compile()
    }

    fn svc(ns: &str, annotations: Option<Value>) -> Service {
        let mut v = json!({"metadata": {"name": "api", "namespace": ns, "resourceVersion": "7"},
            "spec": {"ports": [{"name": "grpc", "port": 50051}]}});
        if let Some(a) = annotations {
            v["metadata"]["annotations"] = a;
        }
        serde_json::from_value(v).expect("service")
    }

    fn labels(opt: Option<&str>) -> BTreeMap<String, String> {
        opt.map(|v| (lb_l7_core::policy::OPT_LABEL.to_string(), v.to_string()))
            .into_iter()
            .collect()
    }

    /// Applies a JSON Patch as the API server does.
    fn apply(svc: &Service, patch: &Patch) -> Result<Service, String> {
        let mut doc = serde_json::to_value(svc).map_err(|e| e.to_string())?;
        json_patch::patch(&mut doc, &patch.0).map_err(|e| e.to_string())?;
        serde_json::from_value(doc).map_err(|e| e.to_string())
    }

    #[test]
    fn an_opted_in_namespace_enables_and_one_not_in_the_cache_does_nothing() {
        let p = policy("");
        let s = svc("apps", None);
        assert!(matches!(
            plan(&p, &s, Some(&labels(Some("true"))), false),
            Action::Enable(_)
        ));
        assert_eq!(plan(&p, &s, Some(&labels(None)), false), Action::Nothing);
        assert_eq!(plan(&p, &s, None, true), Action::Nothing);
    }

    #[test]
    fn excluded_namespaces_are_never_touched_even_when_labelled_or_reverting() {
        let p = policy("");
        let ours = svc(
            "kube-system",
            Some(json!({"service.cilium.io/lb-l7": "enabled", "lb-l7-webhook/matched-by": "x"})),
        );
        assert_eq!(
            plan(
                &p,
                &svc("kube-system", None),
                Some(&labels(Some("true"))),
                true
            ),
            Action::Nothing
        );
        assert_eq!(plan(&p, &ours, Some(&labels(None)), true), Action::Nothing);
    }

    #[test]
    fn a_dry_run_policy_only_would_enable_and_never_reverts() {
        let p = policy("mode: dry-run\n");
        assert!(matches!(
            plan(&p, &svc("apps", None), Some(&labels(Some("true"))), true),
            Action::WouldEnable(_)
        ));
        let ours = svc(
            "apps",
            Some(json!({"service.cilium.io/lb-l7": "enabled", "lb-l7-webhook/matched-by": "x"})),
        );
        assert_eq!(plan(&p, &ours, Some(&labels(None)), true), Action::Nothing);
    }

    #[test]
    fn revert_removes_what_it_added_when_the_namespace_opts_out_and_only_with_revert() {
        let p = policy("");
        let reason = "port grpc/50051/TCP matches rule 'grpc-ports'";
        let ours = svc(
            "apps",
            Some(
                json!({"service.cilium.io/lb-l7": "enabled", "service.cilium.io/lb-l7-algorithm": "least_request",
                "lb-l7-webhook/matched-by": reason, "team": "a"}),
            ),
        );
        // Still selected: nothing.
        assert_eq!(
            plan(&p, &ours, Some(&labels(Some("true"))), true),
            Action::Nothing
        );
        assert_eq!(plan(&p, &ours, Some(&labels(None)), false), Action::Nothing);
        let Action::Revert {
            patch,
            removed,
            why,
        } = plan(&p, &ours, Some(&labels(None)), true)
        else {
            panic!("expected a revert");
        };
        assert_eq!(why.kind, DecisionKind::ExcludedNamespace);
        assert_eq!(removed.len(), 3);
        let after = apply(&ours, &patch).expect("applies");
        assert_eq!(
            after.metadata.annotations,
            Some(
                [("team".to_string(), "a".to_string())]
                    .into_iter()
                    .collect()
            )
        );
    }

    #[test]
    fn revert_keeps_an_algorithm_it_cannot_tell_it_added_and_a_value_a_person_changed() {
        let p = policy("");
        let ours = svc(
            "apps",
            Some(
                json!({"service.cilium.io/lb-l7": "enabled", "service.cilium.io/lb-l7-algorithm": "round_robin",
                "lb-l7-webhook/matched-by": "matches rule 'grpc-ports'"}),
            ),
        );
        let Action::Revert { patch, removed, .. } =
            plan(&p, &ours, Some(&labels(Some("false"))), true)
        else {
            panic!("expected a revert");
        };
        assert_eq!(
            removed,
            vec!["service.cilium.io/lb-l7", "lb-l7-webhook/matched-by"]
        );
        let after = apply(&ours, &patch).expect("applies");
        let a = after.metadata.annotations.expect("annotations");
        assert_eq!(
            a.get(ALGORITHM_ANNOTATION).map(String::as_str),
            Some("round_robin")
        );
        // Someone turned L7 off by hand after the plan was made: the test fails and nothing is removed.
        let mut changed = ours.clone();
        if let Some(a) = changed.metadata.annotations.as_mut() {
            a.insert("service.cilium.io/lb-l7".into(), "disabled".into());
        }
        assert!(apply(&changed, &patch).is_err());
        // A Service without matched-by is not ours.
        let theirs = svc("apps", Some(json!({"service.cilium.io/lb-l7": "enabled"})));
        assert_eq!(
            plan(&p, &theirs, Some(&labels(None)), true),
            Action::Nothing
        );
    }

    #[test]
    fn the_queue_keeps_each_key_once_in_order() {
        let mut q = WorkQueue::default();
        let k = |n: &str| ("ns".to_string(), n.to_string());
        assert!(q.push(k("a")));
        assert!(q.push(k("b")));
        assert!(!q.push(k("a")));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some(k("a")));
        assert!(q.push(k("a")));
        assert_eq!(q.pop(), Some(k("b")));
        assert_eq!(q.pop(), Some(k("a")));
        assert!(q.is_empty());
    }

    #[test]
    fn the_token_bucket_spaces_takes_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 1, t0);
        assert_eq!(b.take(t0), None);
        assert_eq!(b.take(t0), Some(Duration::from_millis(100)));
        // After waiting those 100 ms the token it reserved is used: the next one is due 100 ms later.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.take(t1), Some(Duration::from_millis(100)));
        let mut unlimited = TokenBucket::new(0.0, 1, t0);
        assert!((0..1000).all(|_| unlimited.take(t0).is_none()));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = |n| backoff(n, Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(b(0), Duration::from_millis(500));
        assert_eq!(b(3), Duration::from_secs(4));
        assert_eq!(b(30), Duration::from_secs(60));
    }
}
