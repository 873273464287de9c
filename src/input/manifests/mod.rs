//! Where the Services and Namespaces of a report come from: manifest files, directories, stdin, or a cluster.
//!
//! Offline input is read in one pass per document into a typed [`Object`]: `apiVersion` and `kind` are read first
//! when they come first (as `kubectl`, kustomize and the API server write them), so a Service's `metadata` and
//! `spec` go straight into k8s-openapi's types and every other object is skipped without building a value. Only a
//! document that puts `metadata` or `spec` before `kind` is buffered as a `serde_json::Value` and converted once its
//! kind is known. JSON input goes through serde_json, YAML through serde_norway (libyaml, with YAML merge keys applied
//! as kubectl applies them), one document at a time, so a bad document is reported with its file and number and
//! never hides the others.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lb_l7_core::namespace::{NamespaceContext, Unknown};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Where an offline Service was found: a file (or `-` for stdin) and the 1-based number of its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub document: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file, self.document)
    }
}

/// A Service and where it came from (`None` for the cluster).
#[derive(Debug, Clone)]
pub struct FoundService {
    pub service: Service,
    pub origin: Option<Origin>,
    /// Offline: earlier definitions of the same Service (same namespace and name) that this one replaced, as a
    /// later `kubectl apply` of the same object would.
    pub replaced: Vec<Origin>,
}

/// A file or document that could not be read. The message names the file and, for a bad document, its number
/// and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
pub struct SourceError {
    pub file: String,
    /// 1-based number of the document in the file; absent when the file itself cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<u32>,
    /// The line of the error in the file, when the parser says where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(d) = self.document {
            write!(f, ": document {d}")?;
        }
        if let Some(l) = self.line {
            write!(f, " (line {l})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything read from the inputs: Services, the labels of each Namespace, and what could not be read.
#[derive(Debug, Default)]
pub struct Inventory {
    pub services: Vec<FoundService>,
    /// Namespace name to its labels (empty when it has none).
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
    pub errors: Vec<SourceError>,
    /// Objects that are neither Services nor Namespaces (skipped).
    pub skipped: usize,
    /// Where the namespaces come from, so a Service whose Namespace is not among them gets the right warning.
    pub namespace_source: NamespaceSource,
    /// Namespace labels the user stated (`--namespace-labels`, `--assume-opted-in`) rather than read.
    pub stated: BTreeMap<String, BTreeMap<String, String>>,
    /// What the reader did that the user should know, for stderr (e.g. a kustomization built instead of read).
    pub notices: Vec<String>,
    /// Offline: the index in `services` of each (namespace, name), so a Service given twice is one Service.
    seen: HashMap<(String, String), usize>,
}

/// Where an inventory's namespace labels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NamespaceSource {
    /// Namespace objects in the manifests.
    #[default]
    Input,
    /// The cluster's Namespace list.
    Cluster,
    /// The cluster's Namespaces could not be read (e.g. 403): no namespace's labels are known.
    Unreadable,
}

impl Inventory {
    /// The namespace context of a Service: the same rule for every edge (see `lb_l7_core::namespace`).
    pub fn context<'a>(&'a self, svc: &'a Service) -> NamespaceContext<'a> {
        let ns = namespace_of(svc);
        let absent = match self.namespace_source {
            NamespaceSource::Input => Unknown::NotInInput,
            NamespaceSource::Cluster => Unknown::NotInCluster,
            NamespaceSource::Unreadable => {
                return NamespaceContext::unknown(ns, Unknown::Unreadable);
            }
        };
        match self.namespaces.get(ns) {
            Some(labels) => NamespaceContext::known(ns, labels),
            None => NamespaceContext::unknown(ns, absent),
        }
    }

    /// From the cluster's inventory (services must have been readable).
    pub fn from_cluster(
        inv: crate::cluster::Inventory,
    ) -> Result<Self, crate::cluster::ClusterError> {
        inv.services()?;
        let services = match inv.services {
            crate::cluster::Lookup::Found(s) => s,
            _ => Vec::new(),
        };
        let (namespaces, namespace_source) = match inv.namespaces {
            crate::cluster::Lookup::Found(map) => (map, NamespaceSource::Cluster),
            crate::cluster::Lookup::Missing | crate::cluster::Lookup::Unreadable(_) => {
                (HashMap::new(), NamespaceSource::Unreadable)
            }
        };
        Ok(Inventory {
            services: services
                .into_iter()
                .map(|service| FoundService {
                    service,
                    origin: None,
                    replaced: Vec::new(),
                })
                .collect(),
            namespaces,
            namespace_source,
            ..Inventory::default()
        })
    }
}

impl Inventory {
    /// Reads each path: `-` is stdin; a directory is walked for `*.yaml`, `*.yml` and `*.json` (sorted, hidden
    /// entries skipped); a file named explicitly is read whatever its extension.
    pub fn read_paths(&mut self, paths: &[PathBuf]) {
        for path in paths {
            if path.as_os_str() == "-" {
                let mut bytes = Vec::new();
                match std::io::stdin().lock().read_to_end(&mut bytes) {
                    Ok(_) => self.read_bytes("-", &bytes),
                    Err(e) => self.file_error("-", format!("cannot read stdin: {e}")),
                }
            } else if path.is_dir() {
                match super::kustomize::kustomization_file(path) {
                    Some(_) => self.read_kustomization(path, None),
                    None => self.read_dir(path),
                }
            } else {
                self.read_file(path);
            }
        }
    }

    fn file_error(&mut self, file: &str, message: String) {
        self.errors.push(SourceError {
            file: file.to_string(),
            document: None,
            line: None,
            message,
        });
    }

    fn read_dir(&mut self, dir: &Path) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                return self.file_error(
                    &dir.display().to_string(),
                    format!("cannot read directory: {e}"),
                );
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                match super::kustomize::kustomization_file(&p) {
                    Some(_) => self.read_kustomization(&p, Some(dir)),
                    None => self.read_dir(&p),
                }
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            {
                self.read_file(&p);
            }
        }
    }

    /// A kustomization: its raw files are not what gets applied, so read what `kubectl kustomize` builds, or
    /// record an error that says how to build it. `inside` is the directory being walked when it was found there.
    fn read_kustomization(&mut self, dir: &Path, inside: Option<&Path>) {
        let shown = dir.display().to_string();
        match super::kustomize::build(dir) {
            Ok(bytes) => {
                self.notices.push(match inside {
                    Some(parent) => format!(
                        "{shown}: a kustomization inside {}: reading the output of `kubectl kustomize {shown}` instead of its raw files",
                        parent.display()
                    ),
                    None => format!(
                        "{shown}: a kustomization: reading the output of `kubectl kustomize {shown}`"
                    ),
                });
                self.read_bytes(&format!("kubectl kustomize {shown}"), &bytes);
            }
            Err(e) => self.file_error(&shown, e.to_string()),
        }
    }

    fn read_file(&mut self, path: &Path) {
        let name = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => self.read_bytes(&name, &bytes),
            Err(e) => self.file_error(&name, format!("cannot read: {e}")),
        }
    }

    /// Reads one file's content (YAML, one or more documents, or JSON, one or more values).
    pub fn read_bytes(&mut self, file: &str, bytes: &[u8]) {
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => return self.file_error(file, format!("not UTF-8 text: {e}")),
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let file: Arc<str> = Arc::from(file);
        if text.trim_start().starts_with(['{', '[']) {
            self.read_json(&file, text);
        } else {
            self.read_yaml(&file, text);
        }
    }

    fn read_json(&mut self, file: &Arc<str>, text: &str) {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<TopLevel>();
        for (i, value) in stream.enumerate() {
            let document = u32::try_from(i + 1).unwrap_or(u32::MAX);
            match value {
                Ok(top) => self.add_top(file, document, top),
                Err(e) => {
                    self.errors.push(SourceError {
                        file: file.to_string(),
                        document: Some(document),
                        line: Some(e.line() as u64),
                        message: strip_json_location(&e),
                    });
                    // serde_json cannot resynchronise after a syntax error; a type error leaves the stream where
                    // the value ended, but to be safe stop here: the error says where.
                    break;
                }
            }
        }
    }

    /// Parses the documents of a YAML stream, on every core for a large stream: YAML parsing dominates the
    /// time of an offline report (libyaml reads about 15 MB/s per core here), the split into
    /// documents is exact, and documents are independent, so contiguous runs of them are parsed in parallel and
    /// added in their original order.
    fn read_yaml(&mut self, file: &Arc<str>, text: &str) {
        let docs: Vec<(u64, &str)> = split_yaml_documents(text)
            .filter(|(_, d)| has_content(d))
            .collect();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(docs.len() / MIN_DOCUMENTS_PER_THREAD)
            .max(1);
        let parsed: Vec<Parsed> = if threads == 1 {
            docs.iter()
                .map(|(line, doc)| parse_yaml_document(*line, doc))
                .collect()
        } else {
            let per_thread = docs.len().div_ceil(threads);
            let parse_chunk = |chunk: &[(u64, &str)]| -> Vec<Parsed> {
                // A panic in the parser fails its documents, not the others (and keeps the numbering).
                std::panic::catch_unwind(|| {
                    chunk
                        .iter()
                        .map(|(line, doc)| parse_yaml_document(*line, doc))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_else(|_| {
                    (0..chunk.len())
                        .map(|_| Err((None, "the YAML parser panicked".to_string())))
                        .collect()
                })
            };
            let mut chunks = docs.chunks(per_thread);
            let first = chunks.next().unwrap_or_default();
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunks
                    .map(|chunk| scope.spawn(move || parse_chunk(chunk)))
                    .collect();
                // The first run of documents on this thread: what it decodes is allocated from the main thread's
                // heap, which the report's entries reuse once the Services are evaluated (less peak memory).
                let mut parsed = parse_chunk(first);
                for h in handles {
                    parsed.extend(h.join().unwrap_or_default());
                }
                parsed
            })
        };
        for (i, result) in parsed.into_iter().enumerate() {
            let document = u32::try_from(i + 1).unwrap_or(u32::MAX);
            match result {
                Ok(Some(top)) => self.add_top(file, document, top),
                Ok(None) => {}
                Err((line, message)) => self.errors.push(SourceError {
                    file: file.to_string(),
                    document: Some(document),
                    line: line.or_else(|| docs.get(i).map(|(l, _)| *l)),
                    message,
                }),
            }
        }
    }

    fn add_top(&mut self, file: &Arc<str>, document: u32, top: TopLevel) {
        match top {
            TopLevel::One(obj) => self.add(file, document, obj),
            TopLevel::Many(objs) => {
                for obj in objs {
                    self.add(file, document, obj);
                }
            }
        }
    }

    fn add(&mut self, file: &Arc<str>, document: u32, obj: Object) {
        match obj {
            Object::Service(svc) => {
                if svc.metadata.name.as_deref().is_none_or(str::is_empty) {
                    self.errors.push(SourceError {
                        file: file.to_string(),
                        document: Some(document),
                        line: None,
                        message: "a Service without metadata.name".to_string(),
                    });
                    return;
                }
                let origin = Origin {
                    file: file.clone(),
                    document,
                };
                let key = (
                    namespace_of(&svc).to_string(),
                    svc.metadata.name.clone().unwrap_or_default(),
                );
                match self.seen.get(&key) {
                    // The same Service again: one Service, the later definition (as a later apply leaves it).
                    Some(&i) => {
                        let earlier = &mut self.services[i];
                        let mut replaced = std::mem::take(&mut earlier.replaced);
                        replaced.extend(earlier.origin.take());
                        *earlier = FoundService {
                            service: *svc,
                            origin: Some(origin),
                            replaced,
                        };
                    }
                    None => {
                        self.seen.insert(key, self.services.len());
                        self.services.push(FoundService {
                            service: *svc,
                            origin: Some(origin),
                            replaced: Vec::new(),
                        });
                    }
                }
            }
            Object::Namespace { name, labels } => {
                self.namespaces.insert(name, labels);
            }
            Object::List(items) => {
                for item in items {
                    self.add(file, document, item);
                }
            }
            Object::Other => self.skipped += 1,
        }
    }

    /// Keeps only the Services of one namespace.
    pub fn retain_namespace(&mut self, namespace: &str) {
        self.services
            .retain(|f| namespace_of(&f.service) == namespace);
        self.seen.clear();
    }

    /// Labels the user states for a namespace (`--namespace-labels`): added to those of its Namespace object, if
    /// the input has one, and winning over them.
    pub fn state_namespace_labels(&mut self, namespace: &str, labels: &BTreeMap<String, String>) {
        self.namespaces
            .entry(namespace.to_string())
            .or_default()
            .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.stated
            .entry(namespace.to_string())
            .or_default()
            .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// `--assume-opted-in`: every namespace of a Service that has no Namespace object (nor stated labels) is
    /// taken as labelled `lb-l7-webhook/enabled=true`.
    pub fn assume_opted_in(&mut self) {
        let missing: Vec<String> = self
            .services
            .iter()
            .map(|f| namespace_of(&f.service))
            .filter(|ns| !self.namespaces.contains_key(*ns))
            .map(str::to_string)
            .collect();
        let opted_in = BTreeMap::from([(
            lb_l7_core::policy::OPT_LABEL.to_string(),
            "true".to_string(),
        )]);
        for ns in missing {
            self.state_namespace_labels(&ns, &opted_in);
        }
    }
}

/// The namespace of a Service; `default` when the manifest names none (as `kubectl apply` would).
pub fn namespace_of(svc: &Service) -> &str {
    lb_l7_core::namespace::namespace_of(&svc.metadata)
}

mod decode;
mod yaml;

use decode::{Object, TopLevel};
pub use yaml::split_yaml_documents;
use yaml::{
    MIN_DOCUMENTS_PER_THREAD, Parsed, has_content, parse_yaml_document, strip_json_location,
};

#[cfg(test)]
mod tests;
