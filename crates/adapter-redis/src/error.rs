//! How a failed script call becomes a [`StoreError`]: no `RedisError` ever
//! leaves the crate.

use std::time::Duration;

use redis::{ErrorKind, RedisError};
use spendgate_ports::StoreError;

use crate::script::{CORRUPT_PREFIX, INVALID_PREFIX, OVERFLOW_PREFIX};

/// Why one script call did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// No reply within the operation timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The client or the server reported an error.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The write happened on the primary, but fewer replicas than required
    /// acknowledged it in time (see [`crate::replicas`]).
    #[error(
        "written on the primary, but {acked} of the {wanted} replicas required acknowledged it \
         within {timeout:?}; its outcome is unknown, as after a timeout: retry with the same key"
    )]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: i64,
        /// Replicas required.
        wanted: u32,
        /// The `WAIT` timeout.
        timeout: Duration,
    },
    /// No dedicated write connection could be taken although one was
    /// free (a broken invariant of the set, reported rather than panicked
    /// on).
    #[error("no dedicated write connection could be taken")]
    NoWriter,
}

/// The text after one of our error prefixes, without the script location
/// Redis appends.
fn our_detail<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let start = text.find(prefix)?;
    let rest = &text[start + prefix.len()..];
    let end = rest.find(" script:").unwrap_or(rest.len());
    Some(rest[..end].trim())
}

impl From<CallError> for StoreError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Timeout(_) | CallError::NotReplicated { .. } | CallError::NoWriter => {
                StoreError::Unavailable(error.to_string())
            }
            CallError::Redis(error) => {
                let text = error.to_string();
                if let Some(detail) = our_detail(&text, INVALID_PREFIX) {
                    StoreError::InvalidInput(detail.to_owned())
                } else if let Some(detail) = our_detail(&text, OVERFLOW_PREFIX) {
                    StoreError::Overflow(detail.to_owned())
                } else if let Some(detail) = our_detail(&text, CORRUPT_PREFIX) {
                    StoreError::Corrupt(detail.to_owned())
                } else if error.code() == Some("WRONGTYPE") {
                    // A key of another type than the layout's: tampered
                    // data, which a script meets before its first write.
                    StoreError::Corrupt(format!("a key of another type: {text}"))
                } else if matches!(
                    error.kind(),
                    ErrorKind::Parse | ErrorKind::UnexpectedReturnType
                ) {
                    StoreError::Corrupt(format!("unreadable reply: {text}"))
                } else {
                    // Connection refused or dropped, cluster down, OOM,
                    // BUSY...: the store could not answer. For reserve
                    // this means deny.
                    StoreError::Unavailable(text)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_errors_map_by_prefix() {
        let text = "ERR spendgate:invalid estimate script: 4d23, on @user_script:23.";
        assert_eq!(our_detail(text, INVALID_PREFIX), Some("estimate"));
        assert_eq!(our_detail(text, OVERFLOW_PREFIX), None);
        assert_eq!(
            StoreError::from(CallError::Timeout(Duration::from_millis(5))),
            StoreError::Unavailable("redis did not answer within 5ms".into())
        );
    }
}
