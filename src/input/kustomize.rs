//! kustomize directories: their raw files are not what gets applied (the `namespace:` transformer, name prefixes,
//! patches...), so `report` builds them with `kubectl kustomize DIR` and reads the output, or says how to.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The file names kustomize accepts for a kustomization, in its own order.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The kustomization file of a directory, if it has one.
pub fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// Why a kustomization could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KustomizeError {
    #[error(
        "a kustomization, and kubectl is not on PATH to build it: its raw files are not what gets applied; run \
         `kubectl kustomize {dir} | lb-l7-webhook report -` (or `kustomize build {dir} | lb-l7-webhook report -`)"
    )]
    NoKubectl { dir: String },
    #[error("`kubectl kustomize {dir}` could not be run: {source}")]
    Spawn {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`kubectl kustomize {dir}` failed ({status}): {stderr}")]
    Failed {
        dir: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Builds a kustomization with `kubectl kustomize DIR` and returns its output (multi-document YAML).
pub fn build(dir: &Path) -> Result<Vec<u8>, KustomizeError> {
    let shown = dir.display().to_string();
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => KustomizeError::NoKubectl { dir: shown.clone() },
            _ => KustomizeError::Spawn {
                dir: shown.clone(),
                source,
            },
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(KustomizeError::Failed {
            dir: shown,
            status: output.status,
            stderr: stderr.trim().lines().collect::<Vec<_>>().join("; "),
        });
    }
    Ok(output.stdout)
}
