//! Client settings from the environment or a `~/.databrickscfg` profile, as the Databricks SDKs read them.

use crate::Credentials;
use crate::login::{LoginError, TokenCache};
use std::path::PathBuf;

#[derive(Debug)]
pub struct Config {
    pub host: String,
    pub credentials: Credentials,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no host: set DATABRICKS_HOST or `host` in profile `{0}`")]
    MissingHost(String),
    #[error(
        "no credentials for {host}: sign in with `deputy login --host {host}`, or set DATABRICKS_TOKEN, or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET, or `token` in profile `{profile}`"
    )]
    MissingCredentials { profile: String, host: String },
    #[error("{0}")]
    TokenCache(#[from] LoginError),
    #[error("could not read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Config {
    /// Explicit values first, then `DATABRICKS_*` variables, then the profile (`DATABRICKS_CONFIG_PROFILE`, default
    /// `DEFAULT`) in `DATABRICKS_CONFIG_FILE` (default `~/.databrickscfg`). With neither a token nor a client id and
    /// secret, the tokens `deputy login` cached for the host ([`TokenCache::from_environment`]) are used.
    pub fn from_environment(
        host: Option<String>,
        token: Option<String>,
        profile: Option<String>,
    ) -> Result<Config, ConfigError> {
        let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let profile_name = profile
            .or_else(|| variable("DATABRICKS_CONFIG_PROFILE"))
            .unwrap_or_else(|| "DEFAULT".into());
        let profile = read_profile(&profile_name)?;
        let setting = |key: &str| {
            profile
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.clone())
        };

        let host = host
            .or_else(|| variable("DATABRICKS_HOST"))
            .or_else(|| setting("host"))
            .ok_or_else(|| ConfigError::MissingHost(profile_name.clone()))?;
        let host = if host.contains("://") {
            host
        } else {
            format!("https://{host}")
        };
        let token = token
            .or_else(|| variable("DATABRICKS_TOKEN"))
            .or_else(|| setting("token"));
        let client_id = variable("DATABRICKS_CLIENT_ID").or_else(|| setting("client_id"));
        let client_secret =
            variable("DATABRICKS_CLIENT_SECRET").or_else(|| setting("client_secret"));
        let credentials = match (token, client_id, client_secret) {
            (Some(token), _, _) => Credentials::Token(token),
            (None, Some(id), Some(secret)) => Credentials::oauth(id, secret, "all-apis"),
            _ => match signed_in(&host)? {
                Some(credentials) => credentials,
                None => {
                    return Err(ConfigError::MissingCredentials {
                        profile: profile_name,
                        host: crate::login::normalize_host(&host),
                    });
                }
            },
        };
        Ok(Config { host, credentials })
    }
}

/// The signed-in credentials for `host`, if `deputy login` cached tokens for it. No cache location (neither
/// `DEPUTY_TOKEN_CACHE` nor `HOME`) means no sign-in; an unreadable cache is an error rather than a silent fallback.
fn signed_in(host: &str) -> Result<Option<Credentials>, ConfigError> {
    let cache = match TokenCache::from_environment() {
        Ok(cache) => cache,
        Err(LoginError::NoCachePath) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let signed_in = cache.get(host)?.is_some();
    Ok(signed_in.then(|| Credentials::signed_in(host, cache)))
}

/// The `key = value` lines of one `[section]` of the config file; an absent file is an empty profile.
fn read_profile(name: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let path = match std::env::var_os("DATABRICKS_CONFIG_FILE") {
        Some(path) => PathBuf::from(path),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".databrickscfg"),
            None => return Ok(Vec::new()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    Ok(parse_profile(&text, name))
}

fn parse_profile(text: &str, name: &str) -> Vec<(String, String)> {
    let mut in_section = false;
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            in_section = section.trim() == name;
        } else if in_section && let Some((key, value)) = line.split_once('=') {
            settings.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_the_named_section() {
        let text = "[DEFAULT]\nhost = http://a\ntoken = t1\n\n[other]\nhost=http://b\n# comment\ntoken= t2\n";
        assert_eq!(
            parse_profile(text, "other"),
            vec![
                ("host".into(), "http://b".into()),
                ("token".into(), "t2".into())
            ]
        );
        assert_eq!(
            parse_profile(text, "DEFAULT")[1],
            ("token".into(), "t1".into())
        );
        assert!(parse_profile(text, "missing").is_empty());
    }
}
