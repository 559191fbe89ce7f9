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

/// Serializes an optional URL with its userinfo masked.
pub(crate) fn masked_opt_url<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(u) => s.serialize_str(&mask_url(u)),
        None => s.serialize_none(),
    }
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
    // Userinfo first, by text: a password holding an unencoded `/`, `?` or `#` makes a URL
    // parser take part of it for the path, where no parser-based masking would look.
    let masked = match (raw.find("://"), raw.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let userinfo = &raw[s + 3..at];
            let user = match userinfo.split_once(':') {
                Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{user}:***"),
                _ => "***".to_string(),
            };
            format!("{}{user}{}", &raw[..s + 3], &raw[at..])
        }
        _ => raw.to_string(),
    };
    match Url::parse(&masked) {
        Ok(mut u) => {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password")
                        || k.eq_ignore_ascii_case("sslpassword")
                    {
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

    #[test]
    fn mask_url_hides_passwords_a_parser_would_misread() {
        // An unencoded `/` in the password: a URL parser sees host `u`, port `12` and the rest
        // of the password as the path.
        for raw in [
            "postgres://u:12/secret@db/x",
            "postgres://u:pa/ss?w#rd@db/x",
            "https://admin:hunter2@jamf.example.com/",
            "postgres://:12/secret@db/x",
        ] {
            let m = mask_url(raw);
            for secret in ["secret", "ss?w", "hunter2"] {
                assert!(!m.contains(secret), "{raw} -> {m}");
            }
            assert!(m.contains("***"), "{raw} -> {m}");
        }
        assert_eq!(
            mask_url("postgres://u:12/secret@db/x"),
            "postgres://u:***@db/x"
        );
    }

    #[test]
    fn opt_url_is_masked_when_shown() {
        #[derive(serde::Serialize)]
        struct S {
            #[serde(serialize_with = "masked_opt_url")]
            url: Option<String>,
        }
        let shown = toml::to_string(&S {
            url: Some("https://a:b/c@jamf".into()),
        })
        .unwrap_or_default();
        assert!(!shown.contains("b/c"), "{shown}");
    }
}
