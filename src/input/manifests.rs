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

/// One parsed YAML document, or the line of the error in the file and its message.
type Parsed = Result<Option<TopLevel>, (Option<u64>, String)>;

/// Below this many documents per core, a stream is parsed on one thread.
const MIN_DOCUMENTS_PER_THREAD: usize = 256;

/// One YAML document; an error carries the line in the file (the document starts on `start_line`).
///
/// serde_norway (libyaml) decodes straight into the typed [`TopLevel`] when the document has no merge key: its
/// typed path resolves anchors and aliases but leaves a `<<` key as an ordinary key. A document that contains
/// `<<` anywhere (even inside a string, which only costs time) is decoded into a `Value` first, its merge keys
/// are applied as YAML 1.1 and kubectl apply them, and the merged value is then decoded into the same types.
fn parse_yaml_document(start_line: u64, doc: &str) -> Parsed {
    let located = |e: serde_norway::Error| {
        let location = e.location();
        let mut message = yaml_message(&e);
        // The parser's messages name the problem, not the value ("invalid type: string"): show the line it is on.
        if let Some(l) = &location
            && let Some(text) = doc.lines().nth(l.line().saturating_sub(1))
        {
            let text = text.trim();
            if !text.is_empty() {
                message = format!(
                    "{message} (column {}: {:?})",
                    l.column(),
                    truncate(text, 80)
                );
            }
        }
        let line = location.map(|l| start_line + (l.line().max(1) as u64) - 1);
        (line, message)
    };
    if !doc.contains("<<") {
        return serde_norway::from_str::<Option<TopLevel>>(doc).map_err(located);
    }
    let mut value: serde_norway::Value = serde_norway::from_str(doc).map_err(located)?;
    apply_merge_keys(&mut value).map_err(|m| (Some(start_line), m))?;
    Option::<TopLevel>::deserialize(value).map_err(|e| (Some(start_line), yaml_message(&e)))
}

/// Applies YAML merge keys (`<<: *base`, `<<: [*a, *b]`) throughout a value: keys of the mapping itself win over
/// merged ones, earlier mappings of a list win over later ones, and a merged mapping's own `<<` is merged too.
fn apply_merge_keys(value: &mut serde_norway::Value) -> Result<(), String> {
    use serde_norway::Value;
    let mut stack = vec![value];
    while let Some(node) = stack.pop() {
        match node {
            Value::Mapping(mapping) => {
                // A merged mapping may carry its own `<<`: merge until none is left.
                let mut rounds = 0;
                while let Some(merge) = mapping.remove("<<") {
                    rounds += 1;
                    if rounds > 64 {
                        return Err("merge keys nested more than 64 deep".to_string());
                    }
                    let sources = match merge {
                        Value::Mapping(m) => vec![m],
                        Value::Sequence(items) => items
                            .into_iter()
                            .map(|i| match i {
                                Value::Mapping(m) => Ok(m),
                                _ => Err("a merge key (<<) lists something that is not a mapping"
                                    .to_string()),
                            })
                            .collect::<Result<_, _>>()?,
                        _ => {
                            return Err(
                                "a merge key (<<) must name a mapping or a list of mappings"
                                    .to_string(),
                            );
                        }
                    };
                    for source in sources {
                        for (k, v) in source {
                            mapping.entry(k).or_insert(v);
                        }
                    }
                }
                stack.extend(mapping.values_mut());
            }
            Value::Sequence(items) => stack.extend(items.iter_mut()),
            Value::Tagged(tagged) => stack.push(&mut tagged.value),
            _ => {}
        }
    }
    Ok(())
}

/// The parser's message without its own (document-relative) location, which [`SourceError`] gives in the file.
fn yaml_message(e: &serde_norway::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

fn strip_json_location(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Splits a YAML stream at its document markers: a line that is `---` (optionally followed by a space and
/// content) or `...` at column 0. YAML forbids such lines inside content, so this split is exact. Yields each
/// document with the 1-based line it starts on.
pub fn split_yaml_documents(text: &str) -> impl Iterator<Item = (u64, &str)> {
    let mut rest = text;
    let mut line = 1u64;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let start_line = line;
        let mut offset = 0;
        loop {
            let remaining = &rest[offset..];
            if remaining.is_empty() {
                done = true;
                let doc = rest;
                rest = "";
                return Some((start_line, doc));
            }
            let (this_line, next) = match remaining.find('\n') {
                Some(i) => (&remaining[..i], offset + i + 1),
                None => (remaining, rest.len()),
            };
            let marker = this_line.trim_end_matches('\r');
            // `...` ends a document; a comment may follow it on its line.
            if marker == "---"
                || marker == "..."
                || marker.starts_with("... ")
                || marker.starts_with("...\t")
            {
                let doc = &rest[..offset];
                rest = &rest[next..];
                line += 1;
                return Some((start_line, doc));
            }
            if marker.starts_with("--- ") || marker.starts_with("---\t") {
                // `--- {inline: document}`: what follows the marker, on the same line, starts the next document.
                let doc = &rest[..offset];
                rest = &rest[offset + 4..];
                return Some((start_line, doc));
            }
            offset = next;
            line += 1;
        }
    })
}

/// Whether a document has anything but blank lines, comments and directives.
fn has_content(doc: &str) -> bool {
    doc.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && !l.starts_with('%')
    })
}

/// A document: one object, or (JSON only) an array of objects.
enum TopLevel {
    One(Object),
    Many(Vec<Object>),
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Kubernetes object or a list of them")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TopLevel, A::Error> {
                ObjectVisitor { default: None }
                    .visit_map(map)
                    .map(TopLevel::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
                let mut out = Vec::new();
                while let Some(o) = seq.next_element_seed(ObjectSeed { default: None })? {
                    out.push(o);
                }
                Ok(TopLevel::Many(out))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TopLevel, E> {
                Err(E::custom(format!(
                    "expected a Kubernetes object, found the text {:?}",
                    truncate(v, 40)
                )))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::One(Object::Other))
            }
            fn visit_none<E: de::Error>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::One(Object::Other))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
                Err(E::custom("expected a Kubernetes object, found a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
                Err(E::custom("expected a Kubernetes object, found a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
                Err(E::custom("expected a Kubernetes object, found a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
                Err(E::custom("expected a Kubernetes object, found a number"))
            }
        }
        d.deserialize_any(V)
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What the reader keeps of one object.
enum Object {
    Service(Box<Service>),
    Namespace {
        name: String,
        labels: BTreeMap<String, String>,
    },
    List(Vec<Object>),
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Service,
    Namespace,
    List,
    Other,
}

fn classify(api_version: Option<&str>, kind: &str) -> Class {
    // Only the core group's kinds: Knative's `serving.knative.dev/v1` Service is not a Kubernetes Service.
    let core = api_version.is_none_or(|v| v == "v1");
    match kind {
        "Service" if core => Class::Service,
        "Namespace" if core => Class::Namespace,
        k if k.ends_with("List") => Class::List,
        _ => Class::Other,
    }
}

/// Deserializes one object; items of a `ServiceList` or `NamespaceList` (as the API server returns them) carry no
/// `kind`, so the list passes its item class down.
struct ObjectSeed {
    default: Option<Class>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = Object;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Object, D::Error> {
        d.deserialize_any(ObjectVisitor {
            default: self.default,
        })
    }
}

struct ItemsSeed {
    default: Option<Class>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed {
    type Value = Vec<Object>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Object>, D::Error> {
        struct V(Option<Class>);
        impl<'de> Visitor<'de> for V {
            type Value = Vec<Object>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Object>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(o) = seq.next_element_seed(ObjectSeed { default: self.0 })? {
                    out.push(o);
                }
                Ok(out)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Vec<Object>, E> {
                Ok(Vec::new())
            }
            fn visit_none<E: de::Error>(self) -> Result<Vec<Object>, E> {
                Ok(Vec::new())
            }
        }
        d.deserialize_any(V(self.default))
    }
}

/// A field that arrived before the object's kind was known: kept as a value and converted later.
enum Pending<T> {
    Absent,
    Typed(T),
    Raw(serde_json::Value),
}

impl<T: serde::de::DeserializeOwned> Pending<T> {
    fn resolve<E: de::Error>(self, field: &str) -> Result<Option<T>, E> {
        match self {
            Pending::Absent => Ok(None),
            Pending::Typed(t) => Ok(Some(t)),
            Pending::Raw(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| E::custom(format!("{field}: {e}"))),
        }
    }
}

enum Key {
    ApiVersion,
    Kind,
    Metadata,
    Spec,
    Items,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "apiVersion" => Key::ApiVersion,
                    "kind" => Key::Kind,
                    "metadata" => Key::Metadata,
                    "spec" => Key::Spec,
                    "items" => Key::Items,
                    _ => Key::Other,
                })
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Key, E> {
                Ok(Key::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Key, E> {
                Ok(Key::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Key, E> {
                Ok(Key::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key::Other)
            }
        }
        d.deserialize_identifier(V)
    }
}

struct ObjectVisitor {
    default: Option<Class>,
}

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
        let mut api_version: Option<Cow<'de, str>> = None;
        let mut kind: Option<Cow<'de, str>> = None;
        let mut metadata: Pending<ObjectMeta> = Pending::Absent;
        let mut spec: Pending<ServiceSpec> = Pending::Absent;
        let mut items: Option<Vec<Object>> = None;
        // The class once both apiVersion and kind are read (or kind is read and apiVersion cannot follow).
        let class_now = |api_version: &Option<Cow<'de, str>>, kind: &Option<Cow<'de, str>>| match (
            api_version,
            kind,
        ) {
            (Some(v), Some(k)) => Some(classify(Some(v), k)),
            (None, Some(k)) => match classify(None, k) {
                // `kind: Service` with no apiVersion yet: wait for it (it may be Knative's).
                Class::Service | Class::Namespace => None,
                c => Some(c),
            },
            _ => None,
        };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::ApiVersion => api_version = Some(map.next_value::<CowStr<'de>>()?.0),
                Key::Kind => kind = Some(map.next_value::<CowStr<'de>>()?.0),
                Key::Metadata => {
                    metadata = match class_now(&api_version, &kind).or(self.default) {
                        Some(Class::Service | Class::Namespace) => {
                            Pending::Typed(map.next_value()?)
                        }
                        Some(Class::Other | Class::List) => {
                            map.next_value::<IgnoredAny>()?;
                            Pending::Absent
                        }
                        None => Pending::Raw(map.next_value()?),
                    }
                }
                Key::Spec => {
                    spec = match class_now(&api_version, &kind).or(self.default) {
                        Some(Class::Service) => Pending::Typed(map.next_value()?),
                        Some(_) => {
                            map.next_value::<IgnoredAny>()?;
                            Pending::Absent
                        }
                        None => Pending::Raw(map.next_value()?),
                    }
                }
                Key::Items => match class_now(&api_version, &kind) {
                    Some(Class::Service | Class::Namespace | Class::Other) => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    _ => {
                        let item_class = match kind.as_deref() {
                            Some("ServiceList") => Some(Class::Service),
                            Some("NamespaceList") => Some(Class::Namespace),
                            _ => None,
                        };
                        items = Some(map.next_value_seed(ItemsSeed {
                            default: item_class,
                        })?);
                    }
                },
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let class = match kind.as_deref() {
            Some(k) => classify(api_version.as_deref(), k),
            None => self.default.unwrap_or(Class::Other),
        };
        Ok(match class {
            Class::Service => {
                let metadata = metadata.resolve("metadata")?.unwrap_or_default();
                let spec = spec.resolve("spec")?;
                Object::Service(Box::new(Service {
                    metadata,
                    spec,
                    status: None,
                }))
            }
            Class::Namespace => {
                let metadata = metadata.resolve("metadata")?.unwrap_or_default();
                match metadata.name {
                    Some(name) if !name.is_empty() => Object::Namespace {
                        name,
                        labels: metadata.labels.unwrap_or_default(),
                    },
                    _ => return Err(de::Error::custom("a Namespace without metadata.name")),
                }
            }
            Class::List => match items {
                Some(items) => Object::List(items),
                None => Object::Other,
            },
            Class::Other => Object::Other,
        })
    }

    // Anything that is not a mapping is not an object: skip it inside a list.
    fn visit_unit<E: de::Error>(self) -> Result<Object, E> {
        Ok(Object::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Object, E> {
        Ok(Object::Other)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Object, E> {
        Ok(Object::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Object, E> {
        Ok(Object::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Object, E> {
        Ok(Object::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Object, E> {
        Ok(Object::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Object, E> {
        Ok(Object::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Object, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Object::Other)
    }
}

/// A string that borrows from the input when it can.
struct CowStr<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Inventory {
        let mut inv = Inventory::default();
        inv.read_bytes("in.yaml", text.as_bytes());
        inv
    }

    #[test]
    fn splits_documents_at_markers_only() {
        let docs: Vec<(u64, &str)> =
            split_yaml_documents("a: 1\n---\nb: |\n  ---x\n  text\n...\n--- \nc: 3\n").collect();
        assert_eq!(docs[0], (1, "a: 1\n"));
        assert_eq!(docs[1], (3, "b: |\n  ---x\n  text\n"));
        assert_eq!(docs[2].0, 7);
        assert!(docs.iter().any(|(_, d)| d.contains("c: 3")));
        let docs: Vec<(u64, &str)> =
            split_yaml_documents("--- # first\na: 1\n... # end\n--- # second\nb: 2\n").collect();
        let texts: Vec<&str> = docs.iter().map(|(_, d)| d.trim()).collect();
        assert_eq!(texts, ["", "# first\na: 1", "", "# second\nb: 2"]);
    }

    #[test]
    fn reads_services_namespaces_lists_and_skips_others() {
        let inv = read(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {team: a}}\n---\n\
             # a comment-only document is not counted\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {selector: {matchLabels: {a: b}}}\n---\n\
             apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: kn}\nspec: {template: {}}\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: apps}\n  spec: {ports: [{name: grpc, port: 1}]}\n",
        );
        assert!(inv.errors.is_empty(), "{:?}", inv.errors);
        assert_eq!(inv.services.len(), 1);
        assert_eq!(inv.services[0].service.metadata.name.as_deref(), Some("a"));
        assert_eq!(inv.services[0].origin.as_ref().map(|o| o.document), Some(4));
        assert_eq!(inv.namespaces["apps"]["team"], "a");
        assert_eq!(inv.skipped, 2, "Deployment and Knative Service");
    }

    #[test]
    fn a_large_stream_is_decoded_on_several_threads_in_order() {
        let mut text = String::new();
        for i in 0..1500 {
            if i == 1234 {
                text.push_str("---\napiVersion: v1\nkind: Service\nmetadata: {name: bad\n");
            } else {
                text.push_str(&format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\n"
                ));
            }
        }
        let inv = read(&text);
        assert_eq!(inv.services.len(), 1499);
        assert_eq!(
            inv.services[1300].origin.as_ref().map(|o| o.document),
            Some(1302)
        );
        assert_eq!(inv.errors.len(), 1);
        assert_eq!(inv.errors[0].document, Some(1235));
    }

    #[test]
    fn spec_before_kind_is_buffered_and_still_typed() {
        let inv = read(
            "spec: {ports: [{name: grpc, port: 9}]}\nmetadata: {name: late}\nkind: Service\napiVersion: v1\n",
        );
        assert!(inv.errors.is_empty(), "{:?}", inv.errors);
        let svc = &inv.services[0].service;
        assert_eq!(svc.metadata.name.as_deref(), Some("late"));
        assert_eq!(
            svc.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn api_server_service_list_items_have_no_kind() {
        let mut inv = Inventory::default();
        inv.read_bytes(
            "list.json",
            br#"{"kind":"ServiceList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"x","namespace":"n"},"spec":{}}]}"#,
        );
        assert!(inv.errors.is_empty(), "{:?}", inv.errors);
        assert_eq!(inv.services.len(), 1);
    }

    #[test]
    fn json_list_with_items_before_kind() {
        let mut inv = Inventory::default();
        inv.read_bytes(
            "kubectl.json",
            br#"{"apiVersion":"v1","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}},{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{}}],"kind":"List","metadata":{"resourceVersion":""}}"#,
        );
        assert!(inv.errors.is_empty(), "{:?}", inv.errors);
        assert_eq!(inv.services.len(), 1);
        assert_eq!(inv.skipped, 1);
    }

    #[test]
    fn a_bad_document_names_file_document_and_line_and_keeps_the_rest() {
        let inv = read(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  ports: [{port: notanumber}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: c}\n",
        );
        assert_eq!(inv.services.len(), 2);
        assert_eq!(inv.errors.len(), 1);
        let e = &inv.errors[0];
        assert_eq!(e.file, "in.yaml");
        assert_eq!(e.document, Some(2));
        assert_eq!(e.line, Some(9), "{e}");
        assert!(
            e.to_string().starts_with("in.yaml: document 2 (line 9): "),
            "{e}"
        );
    }
}
