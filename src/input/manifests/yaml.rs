//! YAML streams: split at document markers, parse each document (merge keys applied), and name errors by line.

use super::decode::truncate;
use super::*;

/// One parsed YAML document, or the line of the error in the file and its message.
pub(super) type Parsed = Result<Option<TopLevel>, (Option<u64>, String)>;

/// Below this many documents per core, a stream is parsed on one thread.
pub(super) const MIN_DOCUMENTS_PER_THREAD: usize = 256;

/// One YAML document; an error carries the line in the file (the document starts on `start_line`).
///
/// serde_norway (libyaml) decodes straight into the typed [`TopLevel`] when the document has no merge key: its
/// typed path resolves anchors and aliases but leaves a `<<` key as an ordinary key. A document that contains
/// `<<` anywhere (even inside a string, which only costs time) is decoded into a `Value` first, its merge keys
/// are applied as YAML 1.1 and kubectl apply them, and the merged value is then decoded into the same types.
pub(super) fn parse_yaml_document(start_line: u64, doc: &str) -> Parsed {
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
pub(super) fn apply_merge_keys(value: &mut serde_norway::Value) -> Result<(), String> {
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
pub(super) fn yaml_message(e: &serde_norway::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

pub(super) fn strip_json_location(e: &serde_json::Error) -> String {
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
pub(super) fn has_content(doc: &str) -> bool {
    doc.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && !l.starts_with('%')
    })
}
