//! The verifier on arbitrary strings: it must never panic, and nothing an attacker can type without the key may
//! verify. (A random string that verifies would be a forgery: the only way to pass is a genuine Ed25519 signature.)

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static ISSUER: OnceLock<deputy_tokens::TokenIssuer> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let issuer = ISSUER.get_or_init(common::issuer);
    let text = String::from_utf8_lossy(data);
    // Also through the shape test the server uses to route bearer tokens.
    let _ = deputy_tokens::looks_like_jwt(&text);
    if let Ok(claims) = issuer.verify(&text, common::NOW) {
        panic!("an input without a genuine signature verified: {claims:?}");
    }
});
