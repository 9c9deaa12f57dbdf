//! Connection URLs in messages: every adapter and the binary print where
//! they tried to connect, and none may print a password.

/// The URL with any password replaced by `***`: `scheme://user:***@host…`.
///
/// The credentials end at the last `@` before the path, so a password
/// holding `@` is hidden whole; an `@` in the path or query is left alone.
/// A URL without a password (or without `://`) comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let (credentials, host_and_rest) = (&rest[..at], &rest[at..]);
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{host_and_rest}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_whole_and_nothing_else_changes() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("redis://:secret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("sqlite://./a.db?mode=rwc"),
            "sqlite://./a.db?mode=rwc"
        );
        assert_eq!(redact_url("redis://h:1/x@y"), "redis://h:1/x@y");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
