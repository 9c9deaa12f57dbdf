//! API tokens: `[role=]secret[=community|community…]`, parsed into
//! [`TokenSetting`]s, and the rule every secret (token or Cycles key)
//! follows.

use spendgate_domain::CommunityId;

use super::key::Key;
use super::value::invalid;
use super::{MIN_TOKEN_LEN, Origin, SettingsError, TokenSetting};
use crate::inbound::http::Role;

/// Parses API tokens: `[role=]secret[=community|community…]`.
///
/// * `secret`: an operator for every community;
/// * `operator=secret` and `operator=secret=c1|c2`: an operator for every
///   community, or for those listed;
/// * `tenant=secret=c1|c2`: a tenant of those listed (a tenant token
///   always lists its communities);
/// * `secret=c1|c2`: a tenant of those listed (the syntax from before
///   roles, when a listed token could already not act elsewhere).
///
/// The role prefix cannot be mistaken for a secret of the older syntax:
/// a secret is at least [`MIN_TOKEN_LEN`] characters long, so `operator`
/// and `tenant` were never accepted as one, and every token accepted
/// before roles parses as it did, with the role above.
pub(super) fn parse_tokens(
    items: &[String],
    origin: Origin,
) -> Result<Vec<TokenSetting>, SettingsError> {
    let mut tokens: Vec<TokenSetting> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let position = index + 1;
        let token = parse_token(item.trim()).map_err(|message| {
            invalid(
                Key::HttpTokens,
                origin.clone(),
                format!("token #{position}: {message}"),
            )
        })?;
        if tokens.iter().any(|t| t.secret == token.secret) {
            return Err(invalid(
                Key::HttpTokens,
                origin.clone(),
                format!("token #{position}: the same secret is configured twice"),
            ));
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// One token of [`parse_tokens`]; the error says what is wrong with it.
fn parse_token(item: &str) -> Result<TokenSetting, String> {
    let (role, rest) = match item.split_once('=') {
        Some(("operator", rest)) => (Some(Role::Operator), rest),
        Some(("tenant", rest)) => (Some(Role::Tenant), rest),
        _ => (None, item),
    };
    let (secret, list) = match rest.split_once('=') {
        Some((secret, list)) => (secret, Some(list)),
        None => (rest, None),
    };
    check_secret(secret)?;
    let communities = list.map(parse_communities).transpose()?;
    let role = match (role, &communities) {
        (Some(Role::Tenant), None) => {
            return Err(
                "a tenant token lists its communities: tenant=secret=community1|community2"
                    .to_owned(),
            );
        }
        (Some(role), _) => role,
        // The syntax from before roles.
        (None, None) => Role::Operator,
        (None, Some(_)) => Role::Tenant,
    };
    Ok(TokenSetting {
        secret: secret.to_owned(),
        role,
        communities,
    })
}

/// A secret is long enough not to be guessed, and holds none of the
/// syntax's separators.
pub(super) fn check_secret(secret: &str) -> Result<(), String> {
    if secret.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "the secret is shorter than {MIN_TOKEN_LEN} characters"
        ));
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b'=' | b'|'))
    {
        return Err(
            "the secret must be printable ASCII without spaces, ',', '=' or '|'".to_owned(),
        );
    }
    Ok(())
}

/// A lone secret (such as the metrics token), under the same rule.
pub(super) fn parse_secret(key: Key, text: &str, origin: Origin) -> Result<String, SettingsError> {
    let secret = text.trim();
    check_secret(secret).map_err(|message| invalid(key, origin, message))?;
    Ok(secret.to_owned())
}

fn parse_communities(list: &str) -> Result<Vec<CommunityId>, String> {
    list.split('|')
        .map(|name| CommunityId::parse(name.trim()).map_err(|e| format!("community list: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{FlagValues, Settings, SettingsError};
    use crate::inbound::http::Role;

    const SECRET: &str = "0123456789abcdef";

    fn load(items: &[&str]) -> Result<Settings, SettingsError> {
        let flags = FlagValues {
            api_tokens: items.iter().map(|i| (*i).to_owned()).collect(),
            ..FlagValues::default()
        };
        Settings::load(&flags, &|_| None)
    }

    /// The role and communities of the one token `item`.
    fn parsed(item: &str) -> (Role, Option<Vec<String>>) {
        let settings = load(&[item]).unwrap();
        let token = &settings.http.tokens[0];
        assert_eq!(token.secret, SECRET);
        let names = token
            .communities
            .as_ref()
            .map(|list| list.iter().map(ToString::to_string).collect());
        (token.role, names)
    }

    fn list(names: &[&str]) -> Option<Vec<String>> {
        Some(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn a_bare_secret_is_an_operator_of_every_community_as_before_roles() {
        assert_eq!(parsed(SECRET), (Role::Operator, None));
    }

    #[test]
    fn a_secret_with_communities_is_a_tenant_of_those_as_before_roles() {
        assert_eq!(
            parsed(&format!("{SECRET}=guild-1|guild-2")),
            (Role::Tenant, list(&["guild-1", "guild-2"]))
        );
    }

    #[test]
    fn an_explicit_operator_acts_for_every_community_or_those_listed() {
        assert_eq!(
            parsed(&format!("operator={SECRET}")),
            (Role::Operator, None)
        );
        assert_eq!(
            parsed(&format!("operator={SECRET}=guild-1|guild-2")),
            (Role::Operator, list(&["guild-1", "guild-2"]))
        );
    }

    #[test]
    fn an_explicit_tenant_acts_for_those_listed() {
        assert_eq!(
            parsed(&format!("tenant={SECRET}=guild-1")),
            (Role::Tenant, list(&["guild-1"]))
        );
    }

    #[test]
    fn a_secret_with_a_colon_still_parses_as_one_secret() {
        let colon = "operator:0123456789";
        let settings = load(&[colon]).unwrap();
        assert_eq!(settings.http.tokens[0].secret, colon);
        assert_eq!(settings.http.tokens[0].role, Role::Operator);
    }

    #[test]
    fn a_community_with_an_equals_sign_parses_as_before_roles() {
        assert_eq!(
            parsed(&format!("{SECRET}=guild=1")),
            (Role::Tenant, list(&["guild=1"]))
        );
    }

    #[test]
    fn every_bad_token_is_refused_naming_the_setting_the_source_and_the_token() {
        let cases = [
            ("tenant=0123456789abcdef", "lists its communities"),
            ("operator=short", "shorter than 16"),
            ("tenant=short=guild-1", "shorter than 16"),
            ("operator=0123456789abcdef=", "community list"),
            ("tenant=0123456789abcdef=a|{b}", "community list"),
            ("Operator=0123456789abcdef", "shorter than 16"),
            ("admin=0123456789abcdef", "shorter than 16"),
            ("0123456789abc def", "printable ASCII"),
            ("0123456789abcdef|x", "printable ASCII"),
        ];
        for (item, reason) in cases {
            let error = load(&["operator=another-secret-0123", item])
                .err()
                .unwrap_or_else(|| panic!("{item} was accepted"));
            let message = error.to_string();
            assert!(
                message.starts_with("invalid http.tokens from flag --api-token: token #2: "),
                "{item}: {message}"
            );
            assert!(message.contains(reason), "{item}: {message}");
            assert!(!message.contains("0123456789abcdef"), "{item}: {message}");
        }
    }

    #[test]
    fn the_same_secret_under_two_roles_is_refused() {
        let error = load(&[
            &format!("operator={SECRET}"),
            &format!("tenant={SECRET}=guild-1"),
        ])
        .unwrap_err();
        assert!(error.to_string().contains("configured twice"), "{error}");
    }

    #[test]
    fn printed_tokens_show_role_and_communities_but_never_the_secret() {
        let settings = load(&[
            SECRET,
            &format!("{SECRET}1=guild-1|guild-2"),
            &format!("operator={SECRET}2=guild-3"),
        ])
        .unwrap();
        let printed = settings.redacted().http.tokens;
        assert_eq!(
            printed,
            [
                "operator=***",
                "tenant=***=guild-1|guild-2",
                "operator=***=guild-3"
            ]
        );
        assert!(!format!("{settings:?}").contains(SECRET));
    }
}
