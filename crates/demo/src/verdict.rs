//! The verdict: did calls on one channel spread over backends? Pure, no IO.
//!
//! With `n` backends seen, each backend's fair share is `1/n`. A backend is *within tolerance* when its share is
//! off the fair share by at most `tolerance × 1/n` (a relative tolerance: with 3 backends and the default 0.5, every
//! backend must serve between 16.7 % and 50 % of the calls).
//!
//! - `pinned`: exactly one backend served every successful call (what L4 balancing does to one HTTP/2 connection).
//! - `balanced`: at least two backends, every one within tolerance.
//! - `skewed`: at least two backends, but at least one outside tolerance (calls spread, but unevenly: e.g. a slow pod
//!   under least-request, or too few calls to judge).
//! - `no-calls`: no call succeeded, so there is nothing to judge.

use std::fmt;

/// The default relative tolerance around the fair share (see the module docs).
pub const DEFAULT_TOLERANCE: f64 = 0.5;

/// What the spread of calls over backends looks like.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// At least two backends, each within the tolerance of its fair share.
    Balanced,
    /// One backend served every successful call.
    Pinned,
    /// At least two backends, but one or more off its fair share by more than the tolerance.
    Skewed,
    /// No call succeeded.
    #[value(skip)]
    NoCalls,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Balanced => "balanced",
            Verdict::Pinned => "pinned",
            Verdict::Skewed => "skewed",
            Verdict::NoCalls => "no-calls",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict with the numbers behind it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Backends that served at least one call.
    pub backends: usize,
    /// Successful calls counted.
    pub calls: u64,
    /// `1/backends` (0 when there are no calls).
    pub fair_share: f64,
    /// The largest `|share - fair_share| / fair_share` over all backends (0 for one backend or none).
    pub max_deviation: f64,
    /// The tolerance the verdict used.
    pub tolerance: f64,
}

/// Judges a spread of successful calls per backend. Backends with zero calls are ignored (they were not seen).
/// A `tolerance` that is negative or not a number is treated as 0 (only a perfect spread is balanced).
pub fn judge(calls_per_backend: &[u64], tolerance: f64) -> Judgement {
    let tolerance = if tolerance.is_finite() && tolerance > 0.0 {
        tolerance
    } else if tolerance == f64::INFINITY {
        f64::MAX
    } else {
        0.0
    };
    let seen: Vec<u64> = calls_per_backend
        .iter()
        .copied()
        .filter(|&c| c > 0)
        .collect();
    let calls: u64 = seen.iter().sum();
    let backends = seen.len();
    if backends == 0 {
        return Judgement {
            verdict: Verdict::NoCalls,
            backends,
            calls,
            fair_share: 0.0,
            max_deviation: 0.0,
            tolerance,
        };
    }
    let fair_share = 1.0 / backends as f64;
    let max_deviation = seen
        .iter()
        .map(|&c| ((c as f64 / calls as f64) - fair_share).abs() / fair_share)
        .fold(0.0_f64, f64::max);
    let verdict = if backends == 1 {
        Verdict::Pinned
    } else if max_deviation <= tolerance + 1e-12 {
        Verdict::Balanced
    } else {
        Verdict::Skewed
    };
    Judgement {
        verdict,
        backends,
        calls,
        fair_share,
        max_deviation,
        tolerance,
    }
}

/// What the caller expects (`--expect`, `--expect-backends`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expectation {
    pub verdict: Option<Verdict>,
    /// At least this many backends must have served calls.
    pub min_backends: Option<usize>,
}

/// Why an expectation was not met; the text is what the user reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    #[error("expected verdict `{expected}`, got `{got}`")]
    Verdict { expected: Verdict, got: Verdict },
    #[error("expected at least {expected} backends, saw {got}")]
    Backends { expected: usize, got: usize },
}

/// Checks a judgement against an expectation; every unmet part is listed.
pub fn check(judgement: &Judgement, expectation: &Expectation) -> Vec<Unmet> {
    let mut unmet = Vec::new();
    if let Some(expected) = expectation.verdict
        && expected != judgement.verdict
    {
        unmet.push(Unmet::Verdict {
            expected,
            got: judgement.verdict,
        });
    }
    if let Some(expected) = expectation.min_backends
        && judgement.backends < expected
    {
        unmet.push(Unmet::Backends {
            expected,
            got: judgement.backends,
        });
    }
    unmet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_no_calls() {
        assert_eq!(judge(&[], 0.5).verdict, Verdict::NoCalls);
        assert_eq!(judge(&[0, 0], 0.5).verdict, Verdict::NoCalls);
    }

    #[test]
    fn one_backend_is_pinned() {
        let j = judge(&[300], 0.5);
        assert_eq!(j.verdict, Verdict::Pinned);
        assert_eq!(j.backends, 1);
        assert_eq!(j.calls, 300);
        // Backends with zero calls were not seen: still pinned.
        assert_eq!(judge(&[0, 300, 0], 0.5).verdict, Verdict::Pinned);
    }

    #[test]
    fn even_spread_is_balanced() {
        let j = judge(&[100, 100, 100], 0.5);
        assert_eq!(j.verdict, Verdict::Balanced);
        assert_eq!(j.backends, 3);
        assert!(j.max_deviation.abs() < 1e-9);
        assert!((j.fair_share - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn tolerance_edges() {
        // Three backends, fair share 1/3, tolerance 0.5: shares 1/6 and 1/2 are exactly on the edge.
        assert_eq!(judge(&[50, 100, 150], 0.5).verdict, Verdict::Balanced);
        assert_eq!(judge(&[49, 100, 151], 0.5).verdict, Verdict::Skewed);
        // Two backends: fair share 1/2; 75/25 is off by 50 %.
        assert_eq!(judge(&[75, 25], 0.5).verdict, Verdict::Balanced);
        assert_eq!(judge(&[76, 24], 0.5).verdict, Verdict::Skewed);
        assert_eq!(judge(&[99, 1], 0.5).verdict, Verdict::Skewed);
    }

    #[test]
    fn odd_tolerances() {
        assert_eq!(judge(&[51, 49], 0.0).verdict, Verdict::Skewed);
        assert_eq!(judge(&[50, 50], 0.0).verdict, Verdict::Balanced);
        assert_eq!(judge(&[51, 49], -1.0).verdict, Verdict::Skewed);
        assert_eq!(judge(&[51, 49], f64::NAN).verdict, Verdict::Skewed);
        assert_eq!(judge(&[99, 1], f64::INFINITY).verdict, Verdict::Balanced);
    }

    #[test]
    fn expectations() {
        let balanced = judge(&[100, 100, 100], 0.5);
        let pinned = judge(&[300], 0.5);
        let both = Expectation {
            verdict: Some(Verdict::Balanced),
            min_backends: Some(3),
        };
        assert!(check(&balanced, &both).is_empty());
        assert!(check(&pinned, &Expectation::default()).is_empty());
        assert_eq!(
            check(&pinned, &both),
            vec![
                Unmet::Verdict {
                    expected: Verdict::Balanced,
                    got: Verdict::Pinned
                },
                Unmet::Backends {
                    expected: 3,
                    got: 1
                }
            ]
        );
        // More backends than expected is fine (a rollout can add a pod).
        let four = judge(&[75, 75, 75, 75], 0.5);
        assert!(check(&four, &both).is_empty());
        assert_eq!(
            check(&judge(&[150, 150], 0.5), &both),
            vec![Unmet::Backends {
                expected: 3,
                got: 2
            }]
        );
    }

    #[test]
    fn unmet_text_is_readable() {
        let text = Unmet::Verdict {
            expected: Verdict::Balanced,
            got: Verdict::Pinned,
        }
        .to_string();
        assert_eq!(text, "expected verdict `balanced`, got `pinned`");
    }
}
