//! A provider API key that cannot leak through formatting.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret string. `Debug` prints `<redacted>`; there is no `Display` and no `Serialize`, so a config holding one
/// cannot be logged or echoed back by accident. The only way to the value is [`SecretString::expose`], used where the
/// key goes into the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(secret: impl Into<String>) -> SecretString {
        SecretString(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret replaced: some providers echo (part of) the key they refused, and
    /// their messages end up in Deputy's errors and logs.
    pub fn redact_from(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_owned();
        }
        text.replace(&self.0, "<redacted>")
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
        String::deserialize(deserializer).map(SecretString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_redaction_hide_the_value() {
        let secret = SecretString::new("sk-very-secret");
        assert_eq!(format!("{secret:?}"), "SecretString(<redacted>)");
        assert_eq!(
            secret.redact_from("bad key sk-very-secret given"),
            "bad key <redacted> given"
        );
        assert_eq!(SecretString::new("").redact_from("text"), "text");
    }
}
