//! The Cycles protocol's settings: API keys each bound to one tenant, and
//! the subject level that is spendgate's user.

use spendgate_domain::CommunityId;

use super::key::Key;
use super::tokens::check_secret;
use super::{Origin, SettingsError, invalid};
use crate::inbound::cycles::{CyclesKey, UserLevel};

/// Parses `secret=tenant` items: every key names exactly one tenant, and
/// secrets follow the API tokens' rules.
pub(super) fn parse_keys(
    items: &[String],
    origin: Origin,
) -> Result<Vec<CyclesKey>, SettingsError> {
    let mut keys: Vec<CyclesKey> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let position = index + 1;
        let bad = |message: String| invalid(Key::HttpCyclesKeys, origin.clone(), message);
        let Some((secret, tenant)) = item.trim().split_once('=') else {
            return Err(bad(format!(
                "key #{position}: write it as secret=tenant (each key acts for one tenant)"
            )));
        };
        check_secret(secret).map_err(|message| bad(format!("key #{position}: {message}")))?;
        let tenant = CommunityId::parse(tenant.trim())
            .map_err(|e| bad(format!("key #{position}: tenant: {e}")))?;
        if keys.iter().any(|k| k.secret == secret) {
            return Err(bad(format!(
                "key #{position}: the same secret is configured twice"
            )));
        }
        keys.push(CyclesKey {
            secret: secret.to_owned(),
            tenant,
        });
    }
    Ok(keys)
}

/// Parses the user level's name.
pub(super) fn parse_user_level(text: &str, origin: Origin) -> Result<UserLevel, SettingsError> {
    text.trim()
        .parse()
        .map_err(|message: String| invalid(Key::HttpCyclesUserLevel, origin, message))
}

/// `***=tenant`: a key as printed configuration shows it.
pub(super) fn redacted(key: &CyclesKey) -> String {
    format!("***={}", key.tenant)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::{FlagValues, Settings};
    use crate::inbound::cycles::UserLevel;

    const SECRET: &str = "0123456789abcdef";

    fn tenants(settings: &Settings) -> Vec<String> {
        settings
            .http
            .cycles_keys
            .iter()
            .map(|k| k.tenant.to_string())
            .collect()
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file_and_secrets_never_print() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(
            b"[http]\ncycles_keys = [\"file-secret-0123456=t-file\"]\ncycles_user_level = \"workflow\"\n",
        )
        .unwrap();
        let from_file = FlagValues {
            config: Some(file.path().to_path_buf()),
            ..FlagValues::default()
        };
        let s = Settings::load(&from_file, &|_| None).unwrap();
        assert_eq!(tenants(&s), ["t-file"]);
        assert_eq!(s.http.cycles_user_level, UserLevel::Workflow);
        let env = |name: &str| {
            (name == "SPENDGATE_CYCLES_KEYS")
                .then(|| format!("{SECRET}=t-env,other-secret-01234=t-env2"))
        };
        let s = Settings::load(&from_file, &env).unwrap();
        assert_eq!(tenants(&s), ["t-env", "t-env2"]);
        let flags = FlagValues {
            cycles_keys: vec![format!("{SECRET}=t-flag")],
            cycles_user_level: Some("app".to_owned()),
            ..from_file
        };
        let s = Settings::load(&flags, &env).unwrap();
        assert_eq!(tenants(&s), ["t-flag"]);
        assert_eq!(s.http.cycles_user_level, UserLevel::App);
        assert_eq!(s.redacted().http.cycles_keys, ["***=t-flag"]);
        assert!(!format!("{s:?}").contains(SECRET));
        let s = Settings::load(&FlagValues::default(), &|_| None).unwrap();
        assert!(s.http.cycles_keys.is_empty());
        assert_eq!(s.http.cycles_user_level, UserLevel::Agent);
    }

    #[test]
    fn a_key_without_exactly_one_tenant_or_an_unknown_level_is_refused() {
        for bad in [
            SECRET,
            "short=t",
            "0123456789abcdef=a b",
            "0123456789abcdef={t}",
        ] {
            let flags = FlagValues {
                cycles_keys: vec![bad.to_owned()],
                ..FlagValues::default()
            };
            let error = Settings::load(&flags, &|_| None).unwrap_err().to_string();
            assert!(error.contains("--cycles-key"), "{bad}: {error}");
        }
        let twice = FlagValues {
            cycles_keys: vec![format!("{SECRET}=a"), format!("{SECRET}=b")],
            ..FlagValues::default()
        };
        assert!(Settings::load(&twice, &|_| None).is_err());
        let level = FlagValues {
            cycles_user_level: Some("tenant".to_owned()),
            ..FlagValues::default()
        };
        let error = Settings::load(&level, &|_| None).unwrap_err().to_string();
        assert!(error.contains("--cycles-user-level"), "{error}");
    }
}
