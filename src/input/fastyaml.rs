//! A fast path for the plain block YAML that `kubectl`, kustomize and Helm write, in front of serde-saphyr.
//!
//! Measured on the 100,000-Service benchmark (benches/report.rs), serde-saphyr reads about 10 MB/s per core:
//! `perf` puts the time in its parser (granit-parser's scanner and token queue, largely `memmove` of tokens) and
//! its event layer, not in the deserialization into k8s-openapi's types, so no option of ours makes it faster.
//! This reader handles the subset that tools generate (block mappings and sequences, plain and simply quoted
//! one-line scalars, `{}` and `[]`) and gives up, returning `None`, on anything else: comments after content,
//! anchors, aliases, tags, flow collections, block or multi-line scalars, tabs, duplicate keys, escapes it does
//! not know, and any scalar whose YAML type it would have to guess. On `None`, or on any deserialization error,
//! the caller parses the same document with serde-saphyr, so errors and every unusual document get serde-saphyr's
//! exact behaviour and messages; the fast path only ever produces what serde-saphyr would also produce.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// A YAML node of the supported subset.
#[derive(Debug, PartialEq)]
pub(crate) enum Node<'a> {
    /// An empty value (`key:` with nothing under it).
    Empty,
    Scalar {
        text: Cow<'a, str>,
        plain: bool,
    },
    Map(Vec<(Cow<'a, str>, Node<'a>)>),
    Seq(Vec<Node<'a>>),
}

#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

/// Parses one document, or `None` when it is outside the subset.
pub(crate) fn parse(doc: &str) -> Option<Node<'_>> {
    let mut lines = Vec::with_capacity(doc.len() / 16);
    for raw in doc.lines() {
        let trimmed = raw.trim_start_matches(' ');
        let mut text = trimmed.trim_end_matches([' ', '\r']);
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        // Tabs are left to serde-saphyr.
        if text.contains('\t') {
            return None;
        }
        // A comment after content (` #`) is cut when nothing before it is quoted; a quote before it could put
        // the `#` inside a string, so such lines are left to serde-saphyr.
        if let Some(p) = text.find(" #") {
            let head = &text[..p];
            if head.contains(['\'', '"']) {
                return None;
            }
            text = head.trim_end_matches(' ');
        }
        lines.push(Line {
            indent: raw.len() - trimmed.len(),
            text,
        });
    }
    let first = lines.first()?.indent;
    let mut p = Parser {
        lines,
        i: 0,
        depth: 0,
    };
    let node = p.block(first)?;
    (p.i == p.lines.len()).then_some(node)
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    i: usize,
    depth: usize,
}

/// Deeper documents go to serde-saphyr (its own depth limit is 64 too), so recursion stays bounded.
const MAX_DEPTH: usize = 64;

fn is_seq_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// Characters that give a scalar or key a meaning other than plain text when they come first.
fn special_start(text: &str) -> bool {
    text.starts_with([
        '"', '\'', '?', '{', '[', '&', '*', '!', '|', '>', '%', '@', '`', ',', ']', '}', '#', ':',
    ]) || text == "-"
        || text.starts_with("- ")
        || text.starts_with("---")
        || text.starts_with("...")
}

enum KeySplit<'a> {
    Key(&'a str, &'a str),
    NotAKey,
}

/// `key: rest` or `key:`; `None` to give up (a quoted or odd key).
fn split_key(text: &str) -> Option<KeySplit<'_>> {
    let pos = match text.find(": ") {
        Some(p) => p,
        None if text.ends_with(':') => text.len() - 1,
        None => return Some(KeySplit::NotAKey),
    };
    let key = &text[..pos];
    if key.is_empty() || special_start(key) || key.ends_with(' ') || key.contains(": ") {
        return None;
    }
    Some(KeySplit::Key(key, text[pos + 1..].trim_start_matches(' ')))
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.i).copied()
    }

    fn block(&mut self, indent: usize) -> Option<Node<'a>> {
        let line = self.peek()?;
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let node = if is_seq_item(line.text) {
            self.seq(indent)
        } else {
            self.map(indent)
        };
        self.depth -= 1;
        node
    }

    /// The value under `key:` with nothing after the colon.
    fn nested(&mut self, indent: usize) -> Option<Node<'a>> {
        match self.peek() {
            Some(l) if l.indent > indent => self.block(l.indent),
            // kubectl's style: a sequence at the same indentation as its key.
            Some(l) if l.indent == indent && is_seq_item(l.text) => self.seq(indent),
            _ => Some(Node::Empty),
        }
    }

    fn map(&mut self, indent: usize) -> Option<Node<'a>> {
        let mut entries: Vec<(Cow<'a, str>, Node<'a>)> = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent != indent || is_seq_item(line.text) {
                break;
            }
            let KeySplit::Key(key, rest) = split_key(line.text)? else {
                return None; // a scalar line inside a mapping
            };
            self.i += 1;
            let value = if rest.is_empty() {
                self.nested(indent)?
            } else {
                let v = scalar(rest)?;
                // A more indented line after a scalar would continue it (a multi-line plain scalar).
                if self.peek().is_some_and(|l| l.indent > indent) {
                    return None;
                }
                v
            };
            if entries.iter().any(|(k, _)| k == key) {
                return None;
            }
            entries.push((Cow::Borrowed(key), value));
        }
        if self.peek().is_some_and(|l| l.indent > indent) {
            return None;
        }
        Some(Node::Map(entries))
    }

    fn seq(&mut self, indent: usize) -> Option<Node<'a>> {
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent != indent || !is_seq_item(line.text) {
                break;
            }
            let rest = line.text[1..].trim_start_matches(' ');
            if rest.is_empty() {
                self.i += 1;
                items.push(match self.peek() {
                    Some(l) if l.indent > indent => self.block(l.indent)?,
                    _ => Node::Empty,
                });
                continue;
            }
            // `- key: value` or `- - item`: the rest of the line is the first line of a block at its column.
            let column = indent + (line.text.len() - rest.len());
            let is_block = is_seq_item(rest) || matches!(split_key(rest)?, KeySplit::Key(..));
            if is_block {
                self.lines[self.i] = Line {
                    indent: column,
                    text: rest,
                };
                items.push(self.block(column)?);
            } else {
                self.i += 1;
                items.push(scalar(rest)?);
                if self.peek().is_some_and(|l| l.indent > indent) {
                    return None;
                }
            }
        }
        if self.peek().is_some_and(|l| l.indent > indent) {
            return None;
        }
        Some(Node::Seq(items))
    }
}

/// A one-line scalar after `key: ` or `- `.
fn scalar(text: &str) -> Option<Node<'_>> {
    match text {
        "{}" => return Some(Node::Map(Vec::new())),
        "[]" => return Some(Node::Seq(Vec::new())),
        _ => {}
    }
    if let Some(inner) = text.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        return double_quoted(inner).map(|text| Node::Scalar { text, plain: false });
    }
    if let Some(inner) = text.strip_prefix('\'') {
        let inner = inner.strip_suffix('\'')?;
        return single_quoted(inner).map(|text| Node::Scalar { text, plain: false });
    }
    if special_start(text) || text.contains(": ") || text.ends_with(':') {
        return None;
    }
    Some(Node::Scalar {
        text: Cow::Borrowed(text),
        plain: true,
    })
}

fn double_quoted(inner: &str) -> Option<Cow<'_, str>> {
    if !inner.contains(['\\', '"']) {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return None, // the closing quote came earlier: more after it
            '\\' => out.push(match chars.next()? {
                '\\' => '\\',
                '"' => '"',
                '/' => '/',
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                _ => return None,
            }),
            c => out.push(c),
        }
    }
    Some(Cow::Owned(out))
}

fn single_quoted(inner: &str) -> Option<Cow<'_, str>> {
    if !inner.contains('\'') {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        // Inside single quotes, a quote is written twice; a lone one would end the scalar early.
        if c == '\'' && chars.next() != Some('\'') {
            return None;
        }
        out.push(c);
    }
    Some(Cow::Owned(out))
}

/// Gives up: the caller parses the document with serde-saphyr instead.
#[derive(Debug)]
pub(crate) struct GiveUp;

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("outside the fast YAML subset")
    }
}

impl std::error::Error for GiveUp {}

impl de::Error for GiveUp {
    fn custom<T: fmt::Display>(_: T) -> Self {
        GiveUp
    }
}

/// What a plain scalar is when its type is not asked for; `None` when YAML's answer is not obvious.
enum Plain {
    Null,
    Bool(bool),
    Int(i64),
    Str,
}

fn resolve_plain(text: &str) -> Option<Plain> {
    match text {
        "null" | "~" => return Some(Plain::Null),
        "true" => return Some(Plain::Bool(true)),
        "false" => return Some(Plain::Bool(false)),
        _ => {}
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // Leading zeros (octal in YAML 1.1) are left to serde-saphyr.
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        return text.parse().ok().map(Plain::Int);
    }
    // Anything that might be a number, a special float, or a YAML 1.1 boolean or null.
    let first = text.as_bytes()[0];
    if first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.') {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    ) {
        return None;
    }
    Some(Plain::Str)
}

/// Deserializes a [`Node`]; any doubt is [`GiveUp`].
pub(crate) struct NodeDe<'a>(pub(crate) Node<'a>);

fn visit_text<'de, V: Visitor<'de>>(text: Cow<'de, str>, v: V) -> Result<V::Value, GiveUp> {
    match text {
        Cow::Borrowed(s) => v.visit_borrowed_str(s),
        Cow::Owned(s) => v.visit_string(s),
    }
}

impl<'de> Deserializer<'de> for NodeDe<'de> {
    type Error = GiveUp;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, GiveUp> {
        match self.0 {
            Node::Empty => v.visit_unit(),
            Node::Scalar { text, plain: false } => visit_text(text, v),
            Node::Scalar { text, plain: true } => match resolve_plain(&text).ok_or(GiveUp)? {
                Plain::Null => v.visit_unit(),
                Plain::Bool(b) => v.visit_bool(b),
                Plain::Int(i) => v.visit_i64(i),
                Plain::Str => visit_text(text, v),
            },
            Node::Map(entries) => v.visit_map(MapDe {
                entries: entries.into_iter(),
                value: None,
            }),
            Node::Seq(items) => v.visit_seq(SeqDe(items.into_iter())),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, GiveUp> {
        match self.0 {
            Node::Scalar { text, plain: false } => visit_text(text, v),
            // A plain scalar asked for as text is its text, unless YAML would read it as null.
            Node::Scalar { text, plain: true }
                if !matches!(&*text, "null" | "~" | "Null" | "NULL") =>
            {
                visit_text(text, v)
            }
            _ => Err(GiveUp),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, GiveUp> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, GiveUp> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, GiveUp> {
        match &self.0 {
            Node::Empty => v.visit_none(),
            Node::Scalar { text, plain: true } if matches!(&**text, "null" | "~") => v.visit_none(),
            Node::Scalar { text, plain: true } if matches!(&**text, "Null" | "NULL") => Err(GiveUp),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, GiveUp> {
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, GiveUp> {
        v.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct enum
    }
}

struct MapDe<'a> {
    entries: std::vec::IntoIter<(Cow<'a, str>, Node<'a>)>,
    value: Option<Node<'a>>,
}

impl<'de> MapAccess<'de> for MapDe<'de> {
    type Error = GiveUp;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, GiveUp> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(NodeDe(Node::Scalar {
                    text: k,
                    plain: true,
                }))
                .map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, GiveUp> {
        seed.deserialize(NodeDe(self.value.take().ok_or(GiveUp)?))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct SeqDe<'a>(std::vec::IntoIter<Node<'a>>);

impl<'de> SeqAccess<'de> for SeqDe<'de> {
    type Error = GiveUp;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, GiveUp> {
        match self.0.next() {
            Some(n) => seed.deserialize(NodeDe(n)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use serde::Deserialize;

    /// The fast path and serde-saphyr agree, or the fast path gives up.
    fn agree<T: for<'de> Deserialize<'de> + PartialEq + fmt::Debug>(doc: &str) -> bool {
        let slow: Result<T, _> = serde_saphyr::from_str(doc);
        match parse(doc).map(|n| T::deserialize(NodeDe(n))) {
            Some(Ok(fast)) => {
                match &slow {
                    Ok(slow) => assert_eq!(&fast, slow, "{doc}"),
                    Err(e) => panic!("the fast path read {doc:?}, serde-saphyr says: {e}"),
                }
                true
            }
            _ => false,
        }
    }

    #[test]
    fn kubectl_style_service_takes_the_fast_path_and_matches_serde_saphyr() {
        let doc = "apiVersion: v1\nkind: Service\nmetadata:\n  annotations:\n    a/b: 'it''s'\n    c: \"q\\\"x\"\n    \
                   empty: \"\"\n  labels: {}\n  name: api\n  namespace: apps\nspec:\n  clusterIP: 10.96.0.1\n  ports:\n  \
                   - name: grpc\n    port: 50051\n    protocol: TCP\n    targetPort: grpc\n  - port: 80\n    targetPort: 8080\n  \
                   selector:\n    app: api\n  sessionAffinity: None\nstatus:\n  loadBalancer: {}\n";
        assert!(agree::<Service>(doc));
        // As an untyped value, the clusterIP 10.96.0.1 could be read as a number by a YAML 1.1 reader: given up.
        assert!(!agree::<serde_json::Value>(doc));
        assert!(agree::<serde_json::Value>(
            &doc.replace("10.96.0.1", "'10.96.0.1'")
        ));
    }

    #[test]
    fn comments_after_unquoted_content_are_cut() {
        let doc = "# head\nkind: Service # the kind\nmetadata: # meta\n  name: a#b # a name with a hash\nspec:\n  ports:\n  - port: 80 # http\n";
        assert!(agree::<Service>(doc));
        assert!(agree::<serde_json::Value>(doc));
    }

    #[test]
    fn indented_sequences_and_nested_items() {
        let doc = "a:\n  - x1\n  - x2\nb:\n- k: 1\n  l:\n  - - 2\n    - 3\n- \n- z\n";
        assert!(agree::<serde_json::Value>(doc));
    }

    #[test]
    fn gives_up_on_what_it_does_not_handle() {
        for doc in [
            "a: 'x' # comment\n",
            "a: it's # comment\n",
            "a: &x 1\nb: *x\n",
            "a: !tag x\n",
            "a: [1, 2]\n",
            "a: {b: 1}\n",
            "a: |\n  text\n",
            "a: plain\n  continued\n",
            "a: \"multi\n  line\"\n",
            "\"quoted key\": 1\n",
            "a: 1\na: 2\n",
            "a:\tb\n",
            "a: b: c\n",
            "a: \"\\u00e9\"\n",
            "just a scalar\n",
            "a: 1\n b: 2\n",
            &(0..100)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect::<String>(),
        ] {
            assert!(
                parse(doc)
                    .map(|n| serde_json::Value::deserialize(NodeDe(n)))
                    .is_none_or(|r| r.is_err()),
                "{doc:?} should give up"
            );
        }
    }

    #[test]
    fn ambiguous_plain_scalars_give_up_when_their_type_is_not_asked() {
        for v in [
            "yes", "No", "on", "0755", "1.5", "1e3", ".inf", "+1", "NULL", "True",
        ] {
            let doc = format!("a: {v}\n");
            assert!(!agree::<serde_json::Value>(&doc), "{v}");
        }
        // Asked for as text (a label value), they are text, as serde-saphyr reads them.
        assert!(agree::<std::collections::BTreeMap<String, String>>(
            "a: yes\nb: '0755'\nc: x.y\n"
        ));
    }

    #[test]
    fn unquoted_numbers_asked_for_as_text() {
        // resourceVersion: 1234 (unquoted) into a String: both read the text.
        assert!(agree::<Service>(
            "metadata:\n  name: a\n  resourceVersion: 1234\n"
        ));
    }

    #[test]
    fn numbers_reach_typed_fields() {
        assert!(agree::<Service>(
            "metadata:\n  name: a\nspec:\n  ports:\n  - port: 1\n    nodePort: 30000\n"
        ));
        // A port that is not a number: the fast path gives up, serde-saphyr reports the error.
        let n = parse("spec:\n  ports:\n  - port: fifty\n").expect("in the subset");
        assert!(Service::deserialize(NodeDe(n)).is_err());
    }
}
