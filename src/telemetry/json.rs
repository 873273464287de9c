//! The JSON log line, written without serde.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON line: the layout of tracing-subscriber's JSON format with `flatten_event(true)`,
/// `with_current_span(true)` and `with_span_list(false)`, the same keys in the same order (`timestamp`, `level`,
/// the event's fields, `target`, then `span` with the current span's fields and `name`), written straight into
/// the line's buffer. tracing-subscriber's own formatter goes through serde for every field, formats each
/// `Debug` value into a `String` first, and reads the span's fields back from JSON text; on the webhook's review
/// line that was about a tenth of the instructions of a whole review (BENCHMARKS.md, "Where the time goes").
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        // The line is put together in a buffer of its own and handed over in one write.
        let mut line = String::with_capacity(384);
        line.push_str("{\"timestamp\":\"");
        write!(
            line,
            "{}",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        )?;
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        let mut fields = JsonFieldsVisitor {
            line: &mut line,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        line.push_str(",\"target\":");
        json_str(&mut line, meta.target());
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            line.push_str(",\"span\":{");
            let extensions = span.extensions();
            // The span's fields, formatted once when it was created (a JSON object, or nothing when it has none).
            let formatted = extensions
                .get::<FormattedFields<N>>()
                .map(|f| f.fields.as_str())
                .unwrap_or("");
            let inner = formatted
                .trim()
                .strip_prefix('{')
                .and_then(|f| f.strip_suffix('}'))
                .unwrap_or("")
                .trim();
            if !inner.is_empty() {
                line.push_str(inner);
                line.push(',');
            }
            line.push_str("\"name\":");
            json_str(&mut line, span.name());
            line.push('}');
        }
        line.push_str("}\n");
        w.write_str(&line)
    }
}

/// Writes each field as `,"name":value`, typed as tracing-serde types them: booleans and numbers as JSON
/// booleans and numbers (a float that is not finite as `null`), everything else as a string (`Debug`, or
/// `Display` for errors).
struct JsonFieldsVisitor<'a> {
    line: &'a mut String,
    result: fmt::Result,
}

impl JsonFieldsVisitor<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        json_str(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for JsonFieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_str(self.line, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json writes the shortest text that reads back as the same float, and null when not finite.
        match serde_json::to_string(&value) {
            Ok(text) => self.line.push_str(&text),
            Err(_) => self.line.push_str("null"),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        self.line.push('"');
        if self.result.is_ok() {
            self.result = write!(JsonEscape(self.line), "{value}");
        }
        self.line.push('"');
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.line.push('"');
        if self.result.is_ok() {
            self.result = write!(JsonEscape(self.line), "{value:?}");
        }
        self.line.push('"');
    }
}

/// `s` as a JSON string, quotes included.
fn json_str(line: &mut String, s: &str) {
    line.push('"');
    escape_into(line, s);
    line.push('"');
}

/// Appends `s` as the inside of a JSON string, escaped as serde_json escapes: `"`, `\` and the control characters
/// below U+0020 (`\n`, `\r`, `\t`, `\b`, `\f` by name, the others as `\u00xx`); everything else as is.
fn escape_into(line: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Which bytes need an escape: a table, so that the common byte costs one load and one test.
    const ESCAPED: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 0x20 {
            t[b] = true;
            b += 1;
        }
        t[b'"' as usize] = true;
        t[b'\\' as usize] = true;
        t
    };
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !ESCAPED[usize::from(b)] {
            i += 1;
            continue;
        }
        // Every escaped byte is ASCII, so `start..i` and `i + 1..` are on character boundaries.
        line.push_str(&s[start..i]);
        match b {
            b'"' => line.push_str("\\\""),
            b'\\' => line.push_str("\\\\"),
            b'\n' => line.push_str("\\n"),
            b'\r' => line.push_str("\\r"),
            b'\t' => line.push_str("\\t"),
            0x08 => line.push_str("\\b"),
            0x0c => line.push_str("\\f"),
            _ => {
                line.push_str("\\u00");
                line.push(char::from(HEX[usize::from(b >> 4)]));
                line.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        i += 1;
        start = i;
    }
    line.push_str(&s[start..]);
}

/// A `fmt::Write` that escapes what it is given into a JSON string's inside.
struct JsonEscape<'a>(&'a mut String);

impl fmt::Write for JsonEscape<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Failure(&'static str);
    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "failed: {}", self.0)
        }
    }
    impl std::error::Error for Failure {}

    /// Events of every field type, with strings that need escaping, in and out of spans.
    fn log_everything() {
        let awkward = "quote \" backslash \\ newline \n tab \t cr \r bell \u{7} nul \u{0} esc \u{1b} del \u{7f} é 🦀 \u{2028}";
        tracing::info!(
            uid = "705ab4f5-6393-11e8-b7cc-42010a800002",
            namespace = "shop",
            decision = "enable",
            patched = true,
            rules = 3u64,
            delta = -7i64,
            ratio = 0.25f64,
            nan = f64::NAN,
            big = u128::MAX,
            awkward,
            shown = %awkward,
            debugged = ?vec!["a\"b", "c"],
            "review answered"
        );
        let err = Failure("the \"API\"\nserver");
        tracing::warn!(
            error = &err as &(dyn std::error::Error + 'static),
            "with an error"
        );
        tracing::error!("only a message: {}", awkward);
        let span = tracing::info_span!(
            "reconcile",
            namespace = "shop",
            attempt = 2u64,
            note = awkward
        );
        let _entered = span.enter();
        tracing::info!(service = "orders", "inside a span");
        let bare = tracing::info_span!("bare");
        let _bare = bare.enter();
        tracing::info!("inside a span without fields");
    }

    /// The lines written, each as a value and as its keys in order.
    fn lines(make: impl FnOnce(Buffer) -> tracing::Dispatch) -> Vec<(Value, Vec<String>)> {
        let buffer = Buffer::default();
        tracing::dispatcher::with_default(&make(buffer.clone()), log_everything);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| {
                let v = serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                let keys = serde_json::from_str::<KeyOrder>(l).unwrap().0;
                (v, keys)
            })
            .collect()
    }

    /// The line without its timestamp, which must be RFC 3339 with microseconds.
    fn without_timestamp(mut v: Value) -> Value {
        let ts = v.as_object_mut().unwrap().remove("timestamp").unwrap();
        let ts = ts.as_str().unwrap();
        assert!(
            ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "RFC 3339 with microseconds: {ts}"
        );
        v
    }

    /// The top-level keys of a JSON object in the order the text has them (serde_json's map sorts them).
    struct KeyOrder(Vec<String>);

    impl<'de> serde::Deserialize<'de> for KeyOrder {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = KeyOrder;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(
                    self,
                    mut m: M,
                ) -> Result<KeyOrder, M::Error> {
                    let mut keys = Vec::new();
                    while let Some(k) = m.next_key::<String>()? {
                        m.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(k);
                    }
                    Ok(KeyOrder(keys))
                }
            }
            d.deserialize_map(V)
        }
    }

    #[test]
    fn json_lines_are_tracing_subscribers_json_layout_key_for_key() {
        let ours = lines(|b| {
            tracing_subscriber::fmt()
                .with_writer(b)
                .json()
                .event_format(JsonLine)
                .into()
        });
        let theirs = lines(|b| {
            tracing_subscriber::fmt()
                .with_writer(b)
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .into()
        });
        assert_eq!(ours.len(), 5);
        assert_eq!(ours.len(), theirs.len());
        for ((o, o_keys), (t, t_keys)) in ours.into_iter().zip(theirs) {
            assert_eq!(o_keys, t_keys);
            assert_eq!(without_timestamp(o), without_timestamp(t));
        }
    }

    #[test]
    fn json_lines_keep_the_order_timestamp_level_fields_target_span() {
        let buffer = Buffer::default();
        let dispatch: tracing::Dispatch = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .json()
            .event_format(JsonLine)
            .into();
        tracing::dispatcher::with_default(&dispatch, log_everything);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let first = text.lines().next().unwrap();
        let order = [
            "\"timestamp\":",
            "\"level\":\"INFO\"",
            "\"message\":\"review answered\"",
            "\"uid\":",
            "\"patched\":true",
            "\"rules\":3",
            "\"delta\":-7",
            "\"ratio\":0.25",
            "\"nan\":null",
            "\"target\":",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|k| first.find(k).unwrap_or_else(|| panic!("{k} in {first}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{first}");
        let in_span = text.lines().nth(3).unwrap();
        assert!(
            in_span.find("\"target\":").unwrap() < in_span.find("\"span\":{").unwrap(),
            "{in_span}"
        );
        assert!(in_span.ends_with("\"name\":\"reconcile\"}}"), "{in_span}");
    }
}
