//! The static keys of an AWS profile, from the shared credentials file.
//!
//! object_store reads credentials from the environment, a web identity token (EKS
//! IRSA), the container endpoint (ECS, EKS pod identity) and the instance metadata
//! service, but not `~/.aws/credentials`. A laptop user's `AWS_PROFILE` usually means
//! that file: its `aws_access_key_id`, `aws_secret_access_key` and
//! `aws_session_token` are read here (a small INI reader: sections, `key = value`, `#`
//! and `;` comments). A profile with no static keys (SSO, `role_arn`,
//! `credential_process`) is refused with the way out: `aws configure
//! export-credentials --profile NAME --format env` prints variables this tool reads.
//! The region comes from the profile in `~/.aws/config` when no variable sets it.

use std::path::{Path, PathBuf};

use super::RemoteError;

/// A profile's static keys.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticKeys(<redacted>)")
    }
}

/// `key = value` pairs of `[section]` in an INI text, keys lowercased.
pub fn section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut found = None;
    let mut current: Option<Vec<(String, String)>> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if let Some(done) = current.take() {
                found = Some(done);
            }
            if head.trim() == name {
                current = Some(Vec::new());
            }
            continue;
        }
        if let (Some(pairs), Some((k, v))) = (current.as_mut(), line.split_once('=')) {
            pairs.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    current.or(found)
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The credentials file: `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
pub fn credentials_file(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/credentials")))
}

/// The config file: `AWS_CONFIG_FILE`, else `~/.aws/config`.
pub fn config_file(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/config")))
}

/// The static keys of `profile` in the credentials file `file`. `Ok(None)`: no such
/// file or profile, and `required` is false (the `default` profile when `AWS_PROFILE` is
/// not set: the other sources of the chain are tried).
pub fn static_keys(
    file: &Path,
    profile: &str,
    required: bool,
) -> Result<Option<StaticKeys>, RemoteError> {
    let err = |why: String| RemoteError::Profile {
        profile: profile.to_string(),
        file: file.display().to_string(),
        why,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot read the file: {e}"))),
    };
    let Some(pairs) = section(&text, profile) else {
        return match required {
            true => Err(err(format!(
                "no [{profile}] section. An SSO or role profile lives in ~/.aws/config and is not read by this tool: run `eval \"$(aws configure export-credentials --profile {profile} --format env)\"` first"
            ))),
            false => Ok(None),
        };
    };
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(StaticKeys {
            access_key_id,
            secret_access_key,
            session_token: get("aws_session_token"),
        })),
        _ => Err(err(format!(
            "no static keys (aws_access_key_id and aws_secret_access_key). For an SSO or role profile run `eval \"$(aws configure export-credentials --profile {profile} --format env)\"` first"
        ))),
    }
}

/// The region of `profile` in the config file (`[profile NAME]`, or `[default]`).
pub fn region(file: &Path, profile: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let name = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    section(&text, &name)?
        .into_iter()
        .find(|(k, _)| k == "region")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# a comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secretdefault

[backfill]
aws_access_key_id=AKIDBACKFILL
aws_secret_access_key = secret/with=equals
aws_session_token = tok
; another comment
[sso-user]
sso_start_url = https://example.awsapps.com/start
";

    #[test]
    fn a_profile_s_static_keys_are_read_and_others_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(&f, FILE).unwrap();
        let k = static_keys(&f, "backfill", true).unwrap().unwrap();
        assert_eq!(k.access_key_id, "AKIDBACKFILL");
        assert_eq!(k.secret_access_key, "secret/with=equals");
        assert_eq!(k.session_token.as_deref(), Some("tok"));
        assert!(!format!("{k:?}").contains("secret"));
        let d = static_keys(&f, "default", false).unwrap().unwrap();
        assert_eq!(d.session_token, None);
        let e = static_keys(&f, "sso-user", true).unwrap_err().to_string();
        assert!(e.contains("export-credentials --profile sso-user"), "{e}");
        let e = static_keys(&f, "missing", true).unwrap_err().to_string();
        assert!(e.contains("no [missing] section"), "{e}");
        assert_eq!(static_keys(&f, "missing", false).unwrap(), None);
        assert_eq!(
            static_keys(&dir.path().join("none"), "default", false).unwrap(),
            None
        );
        let c = dir.path().join("config");
        std::fs::write(
            &c,
            "[profile backfill]\nregion = eu-west-1\n[default]\nregion=us-east-2\n",
        )
        .unwrap();
        assert_eq!(region(&c, "backfill").as_deref(), Some("eu-west-1"));
        assert_eq!(region(&c, "default").as_deref(), Some("us-east-2"));
        assert_eq!(region(&c, "other"), None);
    }
}
