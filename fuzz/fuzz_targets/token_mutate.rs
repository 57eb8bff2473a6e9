//! The verifier on mutations of a genuine token: edits to its bytes, and tokens re-assembled from a genuine
//! signature with a fuzzer-chosen header or payload. Any verified token must be byte-for-byte the genuine one
//! (base64url is decoded strictly, so a second spelling of the same bytes is refused too).

#![no_main]

#[path = "common.rs"]
mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixture {
    issuer: deputy_tokens::TokenIssuer,
    token: String,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

#[derive(Arbitrary, Debug)]
enum Edit {
    /// XOR a byte.
    Flip { at: u16, mask: u8 },
    Insert { at: u16, byte: u8 },
    Remove { at: u16 },
    Truncate { at: u16 },
    /// Replace the header with this JSON text, keep payload and signature.
    Header(String),
    /// Replace the payload with this JSON text, keep header and signature.
    Payload(String),
    /// Edit one member of the decoded payload JSON.
    Claim { name: String, value: String },
}

fuzz_target!(|data: &[u8]| {
    let fixture = FIXTURE.get_or_init(|| {
        let issuer = common::issuer();
        let token = issuer.sign(&common::genuine_claims()).unwrap();
        assert_eq!(issuer.verify(&token, common::NOW).unwrap(), common::genuine_claims());
        Fixture { issuer, token }
    });
    let mut input = Unstructured::new(data);
    let Ok(edits) = Vec::<Edit>::arbitrary(&mut input) else {
        return;
    };
    let mut bytes = fixture.token.clone().into_bytes();
    for edit in edits.into_iter().take(8) {
        let len = bytes.len().max(1);
        match edit {
            Edit::Flip { at, mask } => {
                if let Some(byte) = bytes.get_mut(at as usize % len) {
                    *byte ^= mask;
                }
            }
            Edit::Insert { at, byte } => bytes.insert((at as usize) % (bytes.len() + 1), byte),
            Edit::Remove { at } => {
                if !bytes.is_empty() {
                    bytes.remove(at as usize % len);
                }
            }
            Edit::Truncate { at } => bytes.truncate(at as usize % len),
            Edit::Header(json) | Edit::Payload(json) if bytes.split(|b| *b == b'.').count() != 3 => {
                let _ = json;
            }
            Edit::Header(json) => bytes = replace_part(&bytes, 0, json.as_bytes()),
            Edit::Payload(json) => bytes = replace_part(&bytes, 1, json.as_bytes()),
            Edit::Claim { name, value } => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let parts: Vec<&str> = text.split('.').collect();
                if parts.len() == 3
                    && let Ok(decoded) = URL_SAFE_NO_PAD.decode(parts[1])
                    && let Ok(serde_json::Value::Object(mut claims)) =
                        serde_json::from_slice::<serde_json::Value>(&decoded)
                {
                    let value = serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
                    claims.insert(name, value);
                    let payload = serde_json::to_vec(&claims).unwrap();
                    bytes = replace_part(&bytes, 1, &payload);
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    if let Ok(claims) = fixture.issuer.verify(&text, common::NOW) {
        assert_eq!(text, fixture.token, "a changed token verified");
        assert_eq!(claims, common::genuine_claims());
    }
});

/// The token with part `index` replaced by the base64url of `json`.
fn replace_part(token: &[u8], index: usize, json: &[u8]) -> Vec<u8> {
    let encoded = URL_SAFE_NO_PAD.encode(json).into_bytes();
    let parts: Vec<&[u8]> = token.split(|b| *b == b'.').collect();
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(if i == index { &encoded } else { part });
    }
    out
}
