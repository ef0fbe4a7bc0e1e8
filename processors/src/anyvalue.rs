//! Rendering OTLP `AnyValue`s as text (docs/tables.md).
//!
//! Attribute maps are `Map<Utf8, Utf8>` so that `attributes['key']` is one plain lookup.
//! Non-string values are rendered: integers and doubles in decimal, booleans
//! `true`/`false`, bytes as standard base64, arrays and key-value lists as JSON.

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
use serde_json::Value as Json;

/// The text form of a value; `None` for an empty `AnyValue` (no value set).
pub fn render(value: &AnyValue) -> Option<String> {
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => render_double(*d),
        Value::BytesValue(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Value::ArrayValue(_) | Value::KvlistValue(_) => to_json(value).to_string(),
        // Only meaningful inside profiles, whose dictionary swarmscope does not receive.
        Value::StringValueStrindex(i) => i.to_string(),
    })
}

/// Doubles in decimal; `NaN`, `Infinity` and `-Infinity` as OTLP/JSON spells them.
pub(crate) fn render_double(d: f64) -> String {
    if d.is_nan() {
        "NaN".into()
    } else if d.is_infinite() {
        if d > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        d.to_string()
    }
}

/// A value as JSON, for arrays and key-value lists: scalars map to JSON scalars, bytes
/// to base64 strings, key-value lists to objects.
pub fn to_json(value: &AnyValue) -> Json {
    match &value.value {
        None => Json::Null,
        Some(Value::StringValue(s)) => Json::String(s.clone()),
        Some(Value::BoolValue(b)) => Json::Bool(*b),
        Some(Value::IntValue(i)) => Json::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(render_double(*d))),
        Some(Value::BytesValue(b)) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Value::ArrayValue(a)) => Json::Array(a.values.iter().map(to_json).collect()),
        Some(Value::KvlistValue(kv)) => Json::Object(
            kv.values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map(to_json).unwrap_or(Json::Null);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
        Some(Value::StringValueStrindex(i)) => Json::from(*i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValue, KeyValueList};

    fn v(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn renders_scalars_as_spec_says() {
        assert_eq!(render(&v(Value::IntValue(42))).as_deref(), Some("42"));
        assert_eq!(render(&v(Value::DoubleValue(1.5))).as_deref(), Some("1.5"));
        assert_eq!(render(&v(Value::BoolValue(true))).as_deref(), Some("true"));
        assert_eq!(
            render(&v(Value::BytesValue(b"hi".to_vec()))).as_deref(),
            Some("aGk=")
        );
        assert_eq!(render(&AnyValue { value: None }), None);
        assert_eq!(
            render(&v(Value::DoubleValue(f64::NEG_INFINITY))).as_deref(),
            Some("-Infinity")
        );
    }

    #[test]
    fn renders_nested_values_as_json() {
        let array = v(Value::ArrayValue(ArrayValue {
            values: vec![v(Value::IntValue(1)), v(Value::StringValue("a".into()))],
        }));
        assert_eq!(render(&array).as_deref(), Some(r#"[1,"a"]"#));
        let kv = v(Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(v(Value::BoolValue(false))),
                ..Default::default()
            }],
        }));
        assert_eq!(render(&kv).as_deref(), Some(r#"{"k":false}"#));
    }
}
