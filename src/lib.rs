//! lb-l7-webhook: turns on Cilium's per-request (L7) load balancing for gRPC Services.
//!
//! Pure core: [`policy`] (what to do with a Service, and why), [`patch`] (the annotations and JSON Patch that do it)
//! and [`admission`] (AdmissionReview in, AdmissionReview out). Every edge (the HTTPS server, the report, the
//! backfill) calls the same core, so they never disagree about a Service.

pub mod admission;
pub mod backfill;
pub mod certs;
pub mod demo;
pub mod doctor;
pub mod manifests;
pub mod patch;
pub mod policy;
pub mod report;
pub mod server;
pub mod telemetry;
