//! Connection URLs in messages: every adapter and the binary print where
//! they tried to connect, and none may print a secret. [`redact_url`] is
//! the workspace's one rule for that, for a URL, a list of URLs or any
//! text (an error message) that holds some.

/// What a query or fragment parameter's name contains (compared in lower
/// case, after percent-decoding) when its value is a secret: passwords
/// (`password`, `sslpassword`, `passwd`, a key's `passphrase`), `pwd`,
/// secrets, tokens, keys (`sslkey`, `api_key`), `auth…` and credentials,
/// and signatures of pre-signed URLs.
const SECRET_NAMES: [&str; 8] = [
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "signature",
];

/// The replacement of every hidden value.
const HIDDEN: &str = "***";

/// `text` with the secrets of every URL in it replaced by `***`.
///
/// `text` may be one URL, a list of them (`redis://:a@h1,redis://:b@h2`)
/// or prose holding some (`cannot connect to postgres://…: refused`). A URL
/// starts at its scheme (`postgres://`, `redis+unix://`, …) and ends at
/// whitespace or where the next URL starts (a `,` or `;` just before it
/// stays as it was). In each URL:
///
/// * **The password.** The credentials end at the URL's **last** `@`, so a
///   password holding `@`, `:`, `/`, `?` or `#` unescaped is hidden whole:
///   `scheme://user:***@host…`. The user name stays. A URL with `@` past
///   its host (in a path or query value) therefore loses more than its
///   password in print, never less. Credentials without `:` are a user
///   name: nothing is hidden there.
/// * **Query and fragment parameters** (split on `&` and `;`) whose name
///   contains `pass`, `pwd`, `secret`, `token`, `key`, `auth`,
///   `credential` or `signature`, in any case and percent-encoding:
///   `?password=***`, `?sslpassword=***`, `?api_token=***`. Other
///   parameters, the host and the path stay as they are.
///
/// A hidden value runs to the end of its URL, so punctuation of the prose
/// right after it (`…?password=x: refused`) is hidden with it: it could be
/// the secret's last character. Everything outside URLs is left alone,
/// and a redacted text comes back
/// unchanged (`redact_url(redact_url(t)) == redact_url(t)`). Whitespace
/// ends a URL, so configuration refuses URLs holding whitespace
/// (percent-encode it, `%20`).
pub fn redact_url(text: &str) -> String {
    let starts = url_starts(text);
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for (index, &(_, body)) in starts.iter().enumerate() {
        let next = starts.get(index + 1).map_or(text.len(), |&(s, _)| s);
        let mut end = text[body..next]
            .find(char::is_whitespace)
            .map_or(next, |offset| body + offset);
        if end == next && next < text.len() {
            // A list: the separator before the next URL is not this URL's.
            end = body + text[body..end].trim_end_matches([',', ';']).len();
        }
        out.push_str(&text[done..body]);
        redact_body(&text[body..end], &mut out);
        done = end;
    }
    out.push_str(&text[done..]);
    out
}

/// Where each URL of `text` starts, and where its body (after `://`)
/// starts.
fn url_starts(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("://") {
        let separator = from + offset;
        from = separator + 3;
        let mut start = separator;
        while start > 0 && is_scheme_byte(bytes[start - 1]) {
            start -= 1;
        }
        // A scheme starts with a letter; `://` without one still starts
        // a URL (a malformed one may hold a password all the same).
        while start < separator && !bytes[start].is_ascii_alphabetic() {
            start += 1;
        }
        starts.push((start, from));
    }
    starts
}

fn is_scheme_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

/// Appends `body` (a URL after its `://`) with its secrets hidden.
fn redact_body(body: &str, out: &mut String) {
    let rest = match body.rfind('@') {
        Some(at) if body[..at].contains(':') => {
            let user = body[..at].split(':').next().unwrap_or_default();
            out.push_str(user);
            out.push(':');
            out.push_str(HIDDEN);
            &body[at..]
        }
        _ => body,
    };
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (rest, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (before_fragment, None),
    };
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        redact_parameters(query, out);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        redact_parameters(fragment, out);
    }
}

/// Appends `name=value` pairs separated by `&` or `;`, the values of
/// secret names hidden.
fn redact_parameters(parameters: &str, out: &mut String) {
    let mut rest = parameters;
    loop {
        let (pair, separator) = match rest.find(['&', ';']) {
            Some(at) => (&rest[..at], Some(&rest[at..=at])),
            None => (rest, None),
        };
        match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(HIDDEN);
            }
            _ => out.push_str(pair),
        }
        let Some(separator) = separator else {
            return;
        };
        out.push_str(separator);
        rest = &rest[pair.len() + 1..];
    }
}

fn is_secret_name(name: &str) -> bool {
    let name = percent_decoded_lowercase(name);
    SECRET_NAMES.iter().any(|secret| name.contains(secret))
}

/// `name` with `%XX` escapes decoded (invalid ones kept as written) and
/// `+` read as a space, in ASCII lower case.
fn percent_decoded_lowercase(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                decoded.push(byte);
                i += 3;
            }
            (None, b'+') => {
                decoded.push(b' ');
                i += 1;
            }
            (None, byte) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts the redaction of `text` and that redacting it again
    /// changes nothing.
    fn shows(text: &str, expected: &str) {
        let shown = redact_url(text);
        assert_eq!(shown, expected, "redacting {text:?}");
        assert_eq!(redact_url(&shown), shown, "redacting {shown:?} again");
    }

    #[test]
    fn a_password_in_the_credentials_is_hidden_and_the_user_stays() {
        shows(
            "postgres://u:secret@h:5432/db",
            "postgres://u:***@h:5432/db",
        );
        shows("redis://:secret@h:6379", "redis://:***@h:6379");
        shows(
            "rediss://default:secret@h:6380/0",
            "rediss://default:***@h:6380/0",
        );
    }

    #[test]
    fn a_password_holding_at_signs_and_colons_is_hidden_whole() {
        shows("postgres://u:p@ss@h/db", "postgres://u:***@h/db");
        shows("postgres://u:p:a:ss@h/db", "postgres://u:***@h/db");
        shows("redis://:a@b:c@d@h:1", "redis://:***@h:1");
        shows("postgres://u:p%40ss@h/db", "postgres://u:***@h/db");
    }

    #[test]
    fn a_password_holding_unescaped_url_delimiters_is_hidden_whole() {
        // Not valid URLs, but a secret all the same.
        shows("redis://:pa/ss@h:1/0", "redis://:***@h:1/0");
        shows("redis://:pa?ss@h:1", "redis://:***@h:1");
        shows("redis://:pa#ss@h:1", "redis://:***@h:1");
        shows("postgres://u:&password=x@h/db", "postgres://u:***@h/db");
    }

    #[test]
    fn a_user_name_alone_is_not_a_secret() {
        shows("postgres://u@h/db", "postgres://u@h/db");
        shows(
            "postgres://u@h/db?password=x",
            "postgres://u@h/db?password=***",
        );
    }

    #[test]
    fn each_kind_of_secret_query_parameter_is_hidden() {
        for name in [
            "password",
            "sslpassword",
            "PassWord",
            "SSLPASSWORD",
            "passwd",
            "sslkey",
            "passphrase",
            "pwd",
            "client_secret",
            "token",
            "api_token",
            "access-token",
            "apikey",
            "auth",
            "authorization",
            "credentials",
            "X-Amz-Signature",
            "pass%77ord",
            "pass%57ord",
            "%70assword",
        ] {
            shows(
                &format!("postgres://h/db?{name}=hunter2"),
                &format!("postgres://h/db?{name}=***"),
            );
        }
    }

    #[test]
    fn other_query_parameters_stay_as_they_are() {
        let plain = "postgres://u@h/db?sslmode=require&application_name=sg&connect_timeout=5";
        shows(plain, plain);
        shows("sqlite://./a.db?mode=rwc", "sqlite://./a.db?mode=rwc");
        shows(
            "redis://h:1/0?protocol=resp3",
            "redis://h:1/0?protocol=resp3",
        );
    }

    #[test]
    fn of_several_parameters_only_the_secret_ones_are_hidden() {
        shows(
            "postgres://u@h/db?sslmode=verify-full&password=a&sslpassword=b&application_name=x&token=c",
            "postgres://u@h/db?sslmode=verify-full&password=***&sslpassword=***&application_name=x&token=***",
        );
        shows(
            "postgres://u:p@h/db?password=q;sslmode=require",
            "postgres://u:***@h/db?password=***;sslmode=require",
        );
        shows(
            "postgres://h/db?password=&x=1&&password",
            "postgres://h/db?password=***&x=1&&password",
        );
    }

    #[test]
    fn fragments_keep_their_place_and_lose_their_secrets() {
        shows(
            "postgres://h/db?password=a#frag",
            "postgres://h/db?password=***#frag",
        );
        shows(
            "postgres://h/db#password=a&b=c",
            "postgres://h/db#password=***&b=c",
        );
        shows("rediss://h:1/#insecure", "rediss://h:1/#insecure");
        shows(
            "postgres://h/db#x?password=a",
            "postgres://h/db#x?password=***",
        );
    }

    #[test]
    fn malformed_urls_never_show_a_secret() {
        shows("redis://:secret@", "redis://:***@");
        shows("redis://:@h", "redis://:***@h");
        shows("postgres://u:secret@", "postgres://u:***@");
        shows("://u:secret@h", "://u:***@h");
        shows("9p://u:secret@h", "9p://u:***@h");
        shows("not a url", "not a url");
        shows("", "");
        shows("postgres://", "postgres://");
        shows("postgres://h/dé?password=x", "postgres://h/dé?password=***");
        shows("postgres://h/db?password", "postgres://h/db?password");
    }

    #[test]
    fn every_url_of_a_cluster_list_is_redacted() {
        shows(
            "redis://:a@h1:7001,redis://:b@h2:7002,rediss://u:c@h3:7003?password=d",
            "redis://:***@h1:7001,redis://:***@h2:7002,rediss://u:***@h3:7003?password=***",
        );
        shows(
            r#"["redis://:a@h1:7001", "redis://:b@h2:7002"]"#,
            r#"["redis://:***@h1:7001", "redis://:***@h2:7002"]"#,
        );
        shows(
            "redis://h1:7001?password=a;redis://h2:7002",
            "redis://h1:7001?password=***;redis://h2:7002",
        );
    }

    #[test]
    fn urls_inside_an_error_text_are_redacted_and_the_prose_stays() {
        shows(
            "cannot connect to postgres://u:p@h:5432/db?sslpassword=k: error returned from \
             database: password authentication failed for user \"u\"",
            // The `:` after the URL could end the secret: hidden with it.
            "cannot connect to postgres://u:***@h:5432/db?sslpassword=*** error returned from \
             database: password authentication failed for user \"u\"",
        );
        shows(
            "connecting to redis://:p@h:6379 timed out; tried redis://h2:6379?token=t too",
            "connecting to redis://:***@h:6379 timed out; tried redis://h2:6379?token=*** too",
        );
    }

    #[test]
    fn no_secret_survives_in_any_of_the_shapes() {
        let secret = "hunter2";
        for text in [
            format!("postgres://u:{secret}@h/db"),
            format!("postgres://u:{secret}@x@h/db"),
            format!("postgres://h/db?password={secret}"),
            format!("postgres://h/db?sslpassword={secret}&sslmode=require"),
            format!("redis://h:1?auth_token={secret}#f"),
            format!("redis://h1?password={secret},redis://h2?password={secret}"),
            format!("error: postgres://h/db?Password={secret} refused"),
        ] {
            assert!(!redact_url(&text).contains(secret), "{text}");
        }
    }
}
