//! Everything read from files: the policy file, and manifests (files, directories, stdin) for `report`.

pub mod kustomize;
pub mod manifests;

use std::path::Path;

use anyhow::Context as _;
use lb_l7_core::policy::Policy;

/// Reads and validates a policy file; the error names the file, the field and what is wrong.
pub fn load_policy(path: Option<&Path>) -> anyhow::Result<Policy> {
    match path {
        None => Ok(Policy::default()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("policy {}: cannot read", path.display()))?;
            Policy::from_yaml(&text).map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))
        }
    }
}
