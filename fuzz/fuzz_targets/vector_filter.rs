//! Vector search's `filters_json` (what a query's caller writes) on arbitrary text: parsing never panics; a text
//! that is a JSON object parses exactly as the same object given as JSON (the two ways the route accepts it); and a
//! parsed filter evaluates on every row, including a row whose text cell is the input itself, without panicking or
//! hanging (`LIKE` patterns are matched against attacker-chosen cells).

#![no_main]

use deputy_vector::Filter;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const COLUMNS: [&str; 5] = ["id", "owner", "n", "text", "tags"];

fn known(column: &str) -> bool {
    COLUMNS.contains(&column)
}

fn rows(input: &str) -> Vec<Map<String, Value>> {
    [
        json!({ "id": "a1", "owner": "alice", "n": 3, "text": "alpha beta", "tags": ["x"] }),
        json!({ "id": "b1", "owner": null, "n": -2.5, "text": "", "tags": null }),
        json!({ "id": 7, "owner": "carol's", "n": "12", "text": input, "tags": { "k": 1 } }),
        json!({}),
    ]
    .into_iter()
    .filter_map(|row| match row {
        Value::Object(map) => Some(map),
        _ => None,
    })
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Filter::parse(text, &known);
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
        let from_object = Filter::from_object(&map, &known);
        assert_eq!(parsed.is_ok(), from_object.is_ok(), "{text:?}");
        if let (Ok(a), Ok(b)) = (&parsed, &from_object) {
            assert_eq!(a, b, "{text:?}");
        }
    }
    if let Ok(filter) = parsed {
        for row in rows(text) {
            let _ = filter.matches(&row);
        }
    }
});
