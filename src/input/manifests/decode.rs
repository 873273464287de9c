//! One object into typed values: a Service or a Namespace straight into k8s-openapi's types, anything else skipped
//! without building a value.

use super::*;
use lb_l7_core::text::Text;

/// A document: one object, or (JSON only) an array of objects.
pub(super) enum TopLevel {
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

pub(super) fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What the reader keeps of one object.
pub(super) enum Object {
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
pub(super) struct ObjectSeed {
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
                Key::ApiVersion => api_version = Some(map.next_value::<Text<'de>>()?.0),
                Key::Kind => kind = Some(map.next_value::<Text<'de>>()?.0),
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
