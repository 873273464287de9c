//! lb-l7-webhook: turns on Cilium's per-request (L7) load balancing for gRPC Services.
//!
//! The decisions live in the pure core, [`lb_l7_core`]; this crate holds the edges that do IO and call it:
//! [`cluster`] (every Kubernetes API call), [`input`] (files and manifests), and one module per subcommand
//! ([`server`], [`report`], [`backfill`], [`manifests`], [`certs`], [`doctor`]). Imports run one way:
//! subcommands -> cluster / input -> core. ARCHITECTURE.md has the map.

pub mod backfill;
pub mod certs;
pub mod cluster;
pub mod doctor;
pub mod input;
pub mod manifests;
pub mod reconcile;
pub mod report;
pub mod server;
pub mod telemetry;
