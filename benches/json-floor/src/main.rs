//! `json-floor STEP REVIEW N`: does STEP N times on the AdmissionReview in the file REVIEW, so that callgrind's
//! count for two values of N gives the instructions of one. The steps:
//! - `review`: the webhook's whole answer (`admission::review` and the response encoded), as the server runs it;
//! - `serde-json`, `sonic-rs`: the body read by that crate into `IgnoredAny`: every byte checked, nothing built;
//! - `simd-json`: the body copied and read into simd-json's tape (simd-json reads in place), nothing built;
//! - `utf8`: the body checked to be UTF-8 (the webhook does this first).

use serde::de::IgnoredAny;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: json-floor review|serde-json|sonic-rs|simd-json|utf8 REVIEW.json N";
    let (Some(step), Some(path), Some(n)) = (args.next(), args.next(), args.next()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let n: usize = n.parse().expect("N is a number");
    let policy = lb_l7_core::policy::Policy::from_yaml(lb_l7_core::policy::DEFAULT_POLICY_YAML)
        .expect("the shipped policy")
        .compile();
    let mut bytes = 0usize;
    for _ in 0..n {
        let body = black_box(&body);
        bytes += match step.as_str() {
            "review" => {
                let r = lb_l7_core::admission::review(&policy, body).expect("a review");
                serde_json::to_vec(&r.response).expect("encodes").len()
            }
            "serde-json" => {
                serde_json::from_slice::<IgnoredAny>(body).expect("JSON");
                body.len()
            }
            "sonic-rs" => {
                sonic_rs::from_slice::<IgnoredAny>(body).expect("JSON");
                body.len()
            }
            "simd-json" => {
                let mut copy = body.clone();
                let tape = simd_json::to_tape(&mut copy).expect("JSON");
                black_box(&tape);
                body.len()
            }
            "utf8" => std::str::from_utf8(body).expect("UTF-8").len(),
            other => {
                eprintln!("unknown step {other:?}; {usage}");
                std::process::exit(2);
            }
        };
    }
    println!("{bytes}");
}
