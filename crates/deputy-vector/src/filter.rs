//! The `filters_json` language of Databricks standard vector-search endpoints, parsed once per query and evaluated
//! per row.
//!
//! A filter is a JSON object; every key is a clause and clauses are ANDed:
//! - `{"col": v}` equality, `{"col": [v1, v2]}` membership (IN);
//! - `{"col NOT": v}` / `{"col NOT": [..]}` the negation (a missing or null cell is "not equal");
//! - `{"col <": n}`, `<=`, `>`, `>=`: numbers compare numerically, strings lexically, other pairs never match;
//! - `{"col LIKE": "token"}`: the cell, split into words, contains the token (case-insensitive); a pattern with `%`
//!   or `_` is a SQL `LIKE` pattern over the whole cell instead;
//! - `{"a OR b": [va, vb]}`: `a = va OR b = vb` (a scalar value is compared with every column).
//!
//! Anything else (a non-object, an unknown operator, an object or nested array as a value, an empty IN list, a
//! column the index does not have) is a [`VectorError::InvalidFilter`], never a panic.

use crate::VectorError;
use serde_json::{Map, Value};

/// A parsed filter: the conjunction of its clauses. The empty filter matches every row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone, PartialEq)]
enum Clause {
    /// The cell equals one of the values.
    In {
        column: String,
        values: Vec<Value>,
    },
    NotIn {
        column: String,
        values: Vec<Value>,
    },
    Compare {
        column: String,
        op: Comparison,
        value: Value,
    },
    Like {
        column: String,
        pattern: String,
    },
    /// `columns[i] = values[i]` for some `i`.
    AnyEqual {
        pairs: Vec<(String, Value)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

fn invalid(message: impl Into<String>) -> VectorError {
    VectorError::InvalidFilter(message.into())
}

impl Filter {
    /// Parses the `filters_json` string. `known_column` says whether a column exists, so that a typo is an error
    /// instead of a filter that silently matches nothing.
    pub fn parse(text: &str, known_column: &dyn Fn(&str) -> bool) -> Result<Filter, VectorError> {
        if text.trim().is_empty() {
            return Ok(Filter::default());
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|error| invalid(format!("`filters_json` is not valid JSON: {error}")))?;
        match value {
            Value::Object(map) => Filter::from_object(&map, known_column),
            Value::Null => Ok(Filter::default()),
            _ => Err(invalid("`filters_json` must be a JSON object")),
        }
    }

    pub fn from_object(
        map: &Map<String, Value>,
        known_column: &dyn Fn(&str) -> bool,
    ) -> Result<Filter, VectorError> {
        let mut clauses = Vec::with_capacity(map.len());
        for (key, value) in map {
            clauses.push(parse_clause(key, value, known_column)?);
        }
        Ok(Filter { clauses })
    }

    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// Whether a row (column name → cell) passes every clause.
    pub fn matches(&self, row: &Map<String, Value>) -> bool {
        self.clauses.iter().all(|clause| clause.matches(row))
    }
}

fn parse_clause(
    key: &str,
    value: &Value,
    known_column: &dyn Fn(&str) -> bool,
) -> Result<Clause, VectorError> {
    let column = |name: &str| -> Result<String, VectorError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid(format!("filter key `{key}` names no column")));
        }
        if !known_column(name) {
            return Err(invalid(format!(
                "filter key `{key}`: the index has no column `{name}`"
            )));
        }
        Ok(name.to_owned())
    };
    if key.contains(" OR ") {
        let columns: Vec<String> = key.split(" OR ").map(column).collect::<Result<_, _>>()?;
        let values = match value {
            Value::Array(values) if values.len() == columns.len() => values.clone(),
            Value::Array(values) => {
                return Err(invalid(format!(
                    "filter key `{key}` has {} columns but {} values",
                    columns.len(),
                    values.len()
                )));
            }
            scalar => vec![scalar.clone(); columns.len()],
        };
        for value in &values {
            scalar(key, value)?;
        }
        return Ok(Clause::AnyEqual {
            pairs: columns.into_iter().zip(values).collect(),
        });
    }
    let (name, operator) = match key.trim_end().rsplit_once(' ') {
        Some((name, operator)) => (name, Some(operator)),
        None => (key, None),
    };
    match operator {
        None => Ok(Clause::In {
            column: column(name)?,
            values: scalars(key, value)?,
        }),
        Some(operator) if operator.eq_ignore_ascii_case("NOT") => Ok(Clause::NotIn {
            column: column(name)?,
            values: scalars(key, value)?,
        }),
        Some(operator) if operator.eq_ignore_ascii_case("LIKE") => match value {
            Value::String(pattern) if !pattern.is_empty() => Ok(Clause::Like {
                column: column(name)?,
                pattern: pattern.clone(),
            }),
            _ => Err(invalid(format!(
                "filter key `{key}` needs a non-empty string"
            ))),
        },
        Some(operator) => {
            let op = match operator {
                "<" => Comparison::Less,
                "<=" => Comparison::LessOrEqual,
                ">" => Comparison::Greater,
                ">=" => Comparison::GreaterOrEqual,
                other => {
                    return Err(invalid(format!(
                        "filter key `{key}`: unknown operator `{other}` (expected NOT, LIKE, OR, <, <=, >, >=)"
                    )));
                }
            };
            if !(value.is_number() || value.is_string()) {
                return Err(invalid(format!(
                    "filter key `{key}` compares with a number or a string"
                )));
            }
            Ok(Clause::Compare {
                column: column(name)?,
                op,
                value: value.clone(),
            })
        }
    }
}

fn scalar(key: &str, value: &Value) -> Result<(), VectorError> {
    match value {
        Value::Array(_) | Value::Object(_) => Err(invalid(format!(
            "filter key `{key}`: values must be strings, numbers, booleans or null"
        ))),
        _ => Ok(()),
    }
}

fn scalars(key: &str, value: &Value) -> Result<Vec<Value>, VectorError> {
    let values = match value {
        Value::Array(values) if values.is_empty() => {
            return Err(invalid(format!("filter key `{key}` has an empty list")));
        }
        Value::Array(values) => values.clone(),
        other => vec![other.clone()],
    };
    for value in &values {
        scalar(key, value)?;
    }
    Ok(values)
}

impl Clause {
    fn matches(&self, row: &Map<String, Value>) -> bool {
        let cell = |column: &str| row.get(column).unwrap_or(&Value::Null);
        match self {
            Clause::In { column, values } => values.iter().any(|value| equal(cell(column), value)),
            Clause::NotIn { column, values } => {
                !values.iter().any(|value| equal(cell(column), value))
            }
            Clause::Compare { column, op, value } => {
                compare(cell(column), value).is_some_and(|ordering| match op {
                    Comparison::Less => ordering.is_lt(),
                    Comparison::LessOrEqual => ordering.is_le(),
                    Comparison::Greater => ordering.is_gt(),
                    Comparison::GreaterOrEqual => ordering.is_ge(),
                })
            }
            Clause::Like { column, pattern } => match cell(column) {
                Value::String(text) => like(text, pattern),
                Value::Number(number) => like(&number.to_string(), pattern),
                _ => false,
            },
            Clause::AnyEqual { pairs } => pairs
                .iter()
                .any(|(column, value)| equal(cell(column), value)),
        }
    }
}

/// Equality as SQL sees it for these types: numbers by value (`1` equals `1.0`), null equals nothing.
fn equal(cell: &Value, value: &Value) -> bool {
    match (cell, value) {
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

fn compare(cell: &Value, value: &Value) -> Option<std::cmp::Ordering> {
    match (cell, value) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

fn like(text: &str, pattern: &str) -> bool {
    if pattern.contains(['%', '_']) {
        return sql_like(
            &text.to_lowercase().chars().collect::<Vec<_>>(),
            &pattern.to_lowercase().chars().collect::<Vec<_>>(),
        );
    }
    let pattern = pattern.to_lowercase();
    text.split(|c: char| !c.is_alphanumeric())
        .any(|word| word.to_lowercase() == pattern)
}

/// SQL `LIKE` (`%` any run, `_` one character), by dynamic programming so no pattern is exponential.
fn sql_like(text: &[char], pattern: &[char]) -> bool {
    // matched[j]: the text prefix read so far matches pattern[..j].
    let mut matched = vec![false; pattern.len() + 1];
    matched[0] = true;
    for j in 1..=pattern.len() {
        matched[j] = matched[j - 1] && pattern[j - 1] == '%';
    }
    for &c in text {
        let mut next = vec![false; pattern.len() + 1];
        for j in 1..=pattern.len() {
            next[j] = match pattern[j - 1] {
                '%' => next[j - 1] || matched[j],
                '_' => matched[j - 1],
                p => matched[j - 1] && p == c,
            };
        }
        matched = next;
    }
    matched[pattern.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn any_column(_: &str) -> bool {
        true
    }

    fn parse(text: &str) -> Result<Filter, VectorError> {
        Filter::parse(text, &any_column)
    }

    fn row(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn each_operator_matches_as_documented() {
        let doc = row(
            json!({ "id": 7, "color": "red", "size": 3.5, "title": "Hello, brave world", "alt": "blue" }),
        );
        let cases = [
            (r#"{"color": "red"}"#, true),
            (r#"{"color": ["blue", "red"]}"#, true),
            (r#"{"color": ["blue"]}"#, false),
            (r#"{"color NOT": "red"}"#, false),
            (r#"{"color NOT": ["blue", "green"]}"#, true),
            (r#"{"size <": 4}"#, true),
            (r#"{"size <=": 3.5}"#, true),
            (r#"{"size >": 3.5}"#, false),
            (r#"{"size >=": 3}"#, true),
            (r#"{"id": 7.0}"#, true),
            (r#"{"title LIKE": "brave"}"#, true),
            (r#"{"title LIKE": "bra"}"#, false),
            (r#"{"title LIKE": "hello%"}"#, true),
            (r#"{"color OR alt": ["green", "blue"]}"#, true),
            (r#"{"color OR alt": ["green", "pink"]}"#, false),
            (r#"{"color": "red", "size >": 10}"#, false),
            (r#"{"missing NOT": "x"}"#, true),
            (r#"{"missing": "x"}"#, false),
            ("", true),
        ];
        for (text, expected) in cases {
            let filter = parse(text).unwrap();
            assert_eq!(filter.matches(&doc), expected, "{text}");
        }
    }

    #[test]
    fn malformed_filters_are_typed_errors() {
        for text in [
            "[1]",
            "\"red\"",
            "{not json",
            r#"{"color ~": "red"}"#,
            r#"{"color": {"a": 1}}"#,
            r#"{"color": []}"#,
            r#"{"color": [[1]]}"#,
            r#"{"size <": [1]}"#,
            r#"{"title LIKE": 3}"#,
            r#"{"a OR b": [1, 2, 3]}"#,
            r#"{" ": 1}"#,
        ] {
            assert!(
                matches!(parse(text), Err(VectorError::InvalidFilter(_))),
                "{text} should be refused"
            );
        }
        let only_id = |name: &str| name == "id";
        let error = Filter::parse(r#"{"colour": "red"}"#, &only_id).unwrap_err();
        assert!(error.to_string().contains("colour"), "{error}");
    }

    fn scalar_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(|n| json!(n)),
            (-1000.0f64..1000.0).prop_map(|n| json!(n)),
            "[a-c]{0,3}".prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,60}") {
            let _ = parse(&text);
        }

        #[test]
        fn parsing_arbitrary_objects_never_panics(key in "[a-z]{1,3}( (NOT|LIKE|OR [a-z]{1,2}|<|<=|>|>=|~))?", value in prop_oneof![
            scalar_value(),
            proptest::collection::vec(scalar_value(), 0..4).prop_map(Value::Array),
            Just(json!({"x": 1})),
        ]) {
            let text = json!({ key: value }).to_string();
            if let Ok(filter) = parse(&text) {
                let _ = filter.matches(&row(json!({ "a": 1, "b": "c" })));
            }
        }

        #[test]
        fn not_is_the_complement_of_equality(cell in scalar_value(), values in proptest::collection::vec(scalar_value(), 1..4)) {
            let doc = row(json!({ "c": cell }));
            let is_in = parse(&json!({ "c": values }).to_string()).unwrap().matches(&doc);
            let not_in = parse(&json!({ "c NOT": values }).to_string()).unwrap().matches(&doc);
            prop_assert_ne!(is_in, not_in);
            let any_equal = values.iter().any(|value| parse(&json!({ "c": value }).to_string()).unwrap().matches(&doc));
            prop_assert_eq!(is_in, any_equal);
        }

        #[test]
        fn comparisons_partition_numbers(cell in -100i64..100, bound in -100i64..100) {
            let doc = row(json!({ "n": cell }));
            let check = |op: &str| parse(&json!({ format!("n {op}"): bound }).to_string()).unwrap().matches(&doc);
            prop_assert_eq!(check("<"), cell < bound);
            prop_assert_eq!(check("<="), cell <= bound);
            prop_assert_eq!(check(">"), !check("<="));
            prop_assert_eq!(check(">="), !check("<"));
        }

        #[test]
        fn conjunction_is_the_and_of_its_clauses(cell in -10i64..10, low in -10i64..10, high in -10i64..10) {
            let doc = row(json!({ "n": cell }));
            let both = parse(&json!({ "n >=": low, "n <": high }).to_string()).unwrap().matches(&doc);
            prop_assert_eq!(both, cell >= low && cell < high);
        }

        #[test]
        fn sql_like_percent_matches_any_infix(prefix in "[ab]{0,4}", middle in "[ab]{0,4}", suffix in "[ab]{0,4}") {
            let text = format!("{prefix}{middle}{suffix}");
            let doc = row(json!({ "t": text }));
            let filter = parse(&json!({ "t LIKE": format!("{prefix}%{suffix}") }).to_string()).unwrap();
            prop_assert!(filter.matches(&doc));
        }
    }
}
