//! The dynamic values that histories carry (inputs and outputs of operations).
//!
//! Histories come from JSON lines, Jepsen EDN and porcupine logs, so the
//! values are a small union of what those formats can express. Models turn
//! these into compact, typed representations once, before the search, so the
//! search itself never touches a `Value`.

use std::fmt;

/// A value read from a history file: JSON or EDN data.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Value {
    /// JSON `null` / EDN `nil`: "no value" (an unread read, or a register's initial state).
    #[default]
    Nil,
    /// JSON or EDN boolean.
    Bool(bool),
    /// An integer (JSON number without fraction, EDN integer).
    Int(i64),
    /// A string.
    Str(String),
    /// An EDN keyword, without the leading colon (`:read` is `Keyword("read")`).
    Keyword(String),
    /// A JSON array, EDN vector or list.
    List(Vec<Value>),
    /// A JSON object or EDN map, in file order.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// True for [`Value::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The text of a string or keyword.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Keyword(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// Converts to JSON (keywords become strings, maps with non-string keys
    /// use the key's display form).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Nil => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Str(s) | Value::Keyword(s) => J::String(s.clone()),
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    let key = match k {
                        Value::Str(s) | Value::Keyword(s) => s.clone(),
                        other => other.to_string(),
                    };
                    map.insert(key, v.to_json());
                }
                J::Object(map)
            }
        }
    }

    /// Converts from JSON. Numbers with a fraction or out of `i64` range
    /// become their decimal text as a string (no history here uses them).
    pub fn from_json(json: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match json {
            J::Null => Value::Nil,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Str(n.to_string()),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::List(items.iter().map(Value::from_json).collect()),
            J::Object(map) => Value::Map(
                map.iter()
                    .map(|(k, v)| (Value::Str(k.clone()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

/// EDN notation: `nil`, `42`, `"s"`, `:kw`, `[a b]`, `{:k v}`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("nil"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\t' => f.write_str("\\t")?,
                        '\r' => f.write_str("\\r")?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            Value::Keyword(k) => write!(f, ":{k}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Map(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k} {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_edn() {
        let v = Value::List(vec![
            Value::Keyword("read".into()),
            Value::Str("a\"b".into()),
            Value::Nil,
            Value::Int(-3),
        ]);
        assert_eq!(v.to_string(), r#"[:read "a\"b" nil -3]"#);
    }

    #[test]
    fn json_round_trip() {
        let j: serde_json::Value = serde_json::json!({"a": [1, null, "x", true]});
        assert_eq!(Value::from_json(&j).to_json(), j);
    }
}
