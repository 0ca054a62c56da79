//! Credentials on disk: the server's secrets key and the account root's
//! key made on first start, the `berth` profile `berth up` writes for the
//! AWS CLI, and what Berth's own clients (the agent, `berth logs`,
//! `berth service`, `berth billing`) sign with.

use anyhow::{bail, Context};
use berth_wire::sigv4::Credentials;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The profile name Berth writes and its clients fall back on.
pub const PROFILE: &str = "berth";
/// Where a server keeps the root key it made, in the data dir.
pub const ROOT_CREDENTIALS_FILE: &str = "root-credentials";

/// Writes `contents` to `path` readable by its owner only, replacing it.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The key that seals secrets in the store: read from `path`, or made there
/// (mode 0600) on first start. Servers sharing a store must share it.
pub fn secrets_key(path: &Path) -> anyhow::Result<berth_control::SecretsKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let hex = text.trim();
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                Some(key) => Ok(berth_control::SecretsKey(key)),
                None => bail!(
                    "secrets key {}: expected 64 hex digits (32 bytes)",
                    path.display()
                ),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = berth_control::SecretsKey::random();
            let hex: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
            write_private(path, &format!("{hex}\n"))?;
            tracing::info!(path = %path.display(), "made a new secrets key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read secrets key {}", path.display())),
    }
}

/// The root credentials a server made, as an AWS credentials file with one
/// `berth` profile (usable with `AWS_SHARED_CREDENTIALS_FILE`).
pub fn save_root_credentials(data_dir: &Path, c: &Credentials) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(ROOT_CREDENTIALS_FILE);
    write_private(
        &path,
        &format!(
            "[{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            c.access_key_id, c.secret_access_key
        ),
    )?;
    Ok(path)
}

/// The root credentials saved in a data dir, if any.
pub fn saved_root_credentials(data_dir: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(data_dir.join(ROOT_CREDENTIALS_FILE)).ok()?;
    profile_credentials(&text, PROFILE)
}

/// The `key = value` lines of section `[section]` of an INI text.
fn section<'a>(text: &'a str, name: &str) -> Vec<(&'a str, &'a str)> {
    let mut inside = false;
    let mut out = vec![];
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            inside = t[1..t.len() - 1].trim() == name;
        } else if inside {
            if let Some((k, v)) = t.split_once('=') {
                out.push((k.trim(), v.trim()));
            }
        }
    }
    out
}

fn profile_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let s = section(text, profile);
    let get = |k: &str| s.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    Some(Credentials {
        access_key_id: get("aws_access_key_id")?,
        secret_access_key: get("aws_secret_access_key")?,
        session_token: get("aws_session_token"),
    })
}

/// `text` with section `[name]` replaced by `body` (or added at the end);
/// every other section kept as it was.
fn upsert_section(text: &str, name: &str, body: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    let mut replaced = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            skipping = t[1..t.len() - 1].trim() == name;
            if skipping && !replaced {
                out.push_str(&format!("[{name}]\n{body}"));
                replaced = true;
            }
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(&format!("[{name}]\n{body}"));
    }
    out
}

fn aws_dir_file(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(name))
}

/// Writes the `berth` profile into the AWS CLI's config and credentials
/// files (honouring `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE`),
/// leaving every other profile as it was. Returns the files written.
pub fn write_profile(
    endpoint: &str,
    region: &str,
    c: &Credentials,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = vec![];
    if let Some(path) = aws_dir_file("AWS_CONFIG_FILE", "config") {
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let body = format!("region = {region}\nendpoint_url = {endpoint}\noutput = json\n");
        write_private(
            &path,
            &upsert_section(&old, &format!("profile {PROFILE}"), &body),
        )?;
        written.push(path);
    }
    if let Some(path) = aws_dir_file("AWS_SHARED_CREDENTIALS_FILE", "credentials") {
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let body = format!(
            "aws_access_key_id = {}\naws_secret_access_key = {}\n",
            c.access_key_id, c.secret_access_key
        );
        write_private(&path, &upsert_section(&old, PROFILE, &body))?;
        written.push(path);
    }
    Ok(written)
}

/// What Berth's own clients sign with: the AWS environment variables, else
/// the profile `AWS_PROFILE` names (or `berth`) in the shared credentials
/// file. `None` sends requests unsigned, which only a server running with
/// `--auth off` accepts.
pub fn client_credentials() -> Option<Credentials> {
    if let (Ok(id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        return Some(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
        });
    }
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| PROFILE.to_string());
    let path = aws_dir_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")?;
    profile_credentials(&std::fs::read_to_string(path).ok()?, &profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_replaced_or_added_and_others_are_kept() {
        let old = "[default]\naws_access_key_id = A\n\n[berth]\naws_access_key_id = OLD\nx = 1\n[other]\nk = v\n";
        let new = upsert_section(old, "berth", "aws_access_key_id = NEW\n");
        assert_eq!(
            new,
            "[default]\naws_access_key_id = A\n\n[berth]\naws_access_key_id = NEW\n[other]\nk = v\n"
        );
        let added = upsert_section("[default]\nk = v\n", "berth", "a = b\n");
        assert_eq!(added, "[default]\nk = v\n\n[berth]\na = b\n");
        assert_eq!(upsert_section("", "berth", "a = b\n"), "[berth]\na = b\n");
        // A profile without a secret gives no credentials.
        assert!(profile_credentials(&new, "berth").is_none());
    }

    #[test]
    fn credentials_are_read_from_their_profile_only() {
        let text = "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n[berth]\naws_access_key_id = B\naws_secret_access_key = BS\naws_session_token = T\n";
        let c = profile_credentials(text, "berth").expect("found");
        assert_eq!(
            (
                c.access_key_id.as_str(),
                c.secret_access_key.as_str(),
                c.session_token.as_deref()
            ),
            ("B", "BS", Some("T"))
        );
        assert!(profile_credentials(text, "missing").is_none());
        assert!(profile_credentials("[berth]\naws_access_key_id = B\n", "berth").is_none());
    }

    #[test]
    fn the_secrets_key_is_made_once_and_private() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sub/secrets.key");
        let a = secrets_key(&path).expect("made");
        let b = secrets_key(&path).expect("read");
        assert_eq!(a.0, b.0);
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "xyz").expect("write");
        assert!(secrets_key(&path).is_err());
    }
}
