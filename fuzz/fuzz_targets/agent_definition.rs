//! What an agent author declares: the MLmodel file's `auth_policy`/`resources` (YAML, so anchors, aliases, tags and
//! deep nesting) and the `TYPE:NAME` resources of a deploy request. Parsing never panics nor blows up memory or
//! time; what it accepts is well-formed (scopes that print back to the same set, resources with a trimmed,
//! non-empty name).
//!
//! The parser lives in `deputy-server`, whose dependencies (DataFusion, candle, ...) are far too heavy to build
//! with fuzzing instrumentation; its definition module depends only on `deputy-core` and serde, so the target
//! compiles that one file, as the server does.

#![no_main]

#[allow(dead_code)]
#[path = "../../crates/deputy-server/src/agents/definition.rs"]
mod definition;

use deputy_core::ScopeSet;
use libfuzzer_sys::fuzz_target;

fn well_formed(resource: &definition::SystemResource) {
    assert!(
        !resource.name.is_empty() && resource.name.trim() == resource.name,
        "{resource:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok((scopes, resources)) = definition::parse_mlmodel(&text) {
        if let Some(scopes) = scopes {
            assert_eq!(ScopeSet::parse(&scopes.to_string()), Ok(scopes));
        }
        resources.iter().flatten().for_each(well_formed);
    }
    if let Ok(resource) = definition::SystemResource::parse(&text) {
        well_formed(&resource);
    }
});
