//! Secrets as configuration holds them: read from a value or a file (`*_file`, also from
//! systemd's `$CREDENTIALS_DIRECTORY`), masked whenever they are shown.
//!
//! Invariant: nothing here ever formats a secret's value; URLs are shown with their password
//! (userinfo or `password=` query) replaced by `***`.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serializer};
use url::Url;

use super::ConfigError;

/// A secret given either as `key` or as `key_file`; both set is an error naming `key_file`.
pub(crate) fn secret_from(
    key: &str,
    value: &Option<SecretString>,
    file: &Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            format!("{key}_file"),
            format!("both {key} and {key}_file are set; use one"),
        )),
        (Some(v), None) if v.expose_secret().is_empty() => Err(ConfigError::new(key, "is empty")),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(path)) => read_secret_file(&format!("{key}_file"), path).map(Some),
        (None, None) => Ok(None),
    }
}

pub(crate) fn read_secret_file(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    // systemd's LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY: a bare name is looked
    // up there first.
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|_| path.is_relative())
        .map(|dir| Path::new(&dir).join(path))
        .filter(|p| p.exists());
    let path = credential.as_deref().unwrap_or(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    // Files written by `echo` or editors end in a newline that is not part of the secret.
    let trimmed = text.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(SecretString::from(trimmed.to_string()))
}

pub(crate) fn non_empty(key: &str, v: Option<String>) -> Result<String, ConfigError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(ConfigError::new(key, "missing or empty")),
    }
}

/// Serializes a configured secret as `"***"`: only whether one is set is ever shown.
pub(crate) fn masked_secret<S: Serializer>(
    v: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}

pub(crate) fn masked_url<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url(v.expose_secret()))
}

/// A list given as a list or as one comma-separated string (environment variables).
pub(crate) fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// Replaces the password of a URL (and any `password=` query value) by `***`.
pub fn mask_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        // Not a URL we can parse: show only the scheme so nothing secret can leak.
        Err(_) => match raw.split_once(':') {
            Some((scheme, _)) if scheme.len() < 20 => format!("{scheme}:***"),
            _ => "***".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_url_hides_password() {
        assert_eq!(
            mask_url("postgres://u:hunter2@db/x"),
            "postgres://u:***@db/x"
        );
        assert!(!mask_url("postgres://db/x?password=hunter2").contains("hunter2"));
        assert_eq!(mask_url("sqlite://jamf-sync.db"), "sqlite://jamf-sync.db");
    }
}
