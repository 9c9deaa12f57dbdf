//! Paged listings: a period's users are unbounded, so no store call and no
//! answer carries them all (one community's size must not stall another's
//! calls on a shared store).

use serde::{Deserialize, Serialize};
use spendgate_domain::{CommunityBudget, Period, UserId, UserSpend};

/// The most users one page holds.
pub const USERS_PAGE_MAX: u16 = 1_000;

/// How many users a page may hold: `1..=`[`USERS_PAGE_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct PageSize(u16);

/// A page size outside `1..=`[`USERS_PAGE_MAX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("page size must be 1..={USERS_PAGE_MAX}, got {0}")]
pub struct PageSizeError(pub u64);

impl PageSize {
    /// The largest page.
    pub const MAX: Self = Self(USERS_PAGE_MAX);

    /// Checks `1..=`[`USERS_PAGE_MAX`].
    ///
    /// # Errors
    /// [`PageSizeError`] outside that range.
    pub fn new(size: u64) -> Result<Self, PageSizeError> {
        match u16::try_from(size) {
            Ok(s) if (1..=USERS_PAGE_MAX).contains(&s) => Ok(Self(s)),
            _ => Err(PageSizeError(size)),
        }
    }

    /// The size as a count.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for PageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<u16> for PageSize {
    type Error = PageSizeError;

    fn try_from(size: u16) -> Result<Self, Self::Error> {
        Self::new(u64::from(size))
    }
}

impl From<PageSize> for u16 {
    fn from(size: PageSize) -> Self {
        size.0
    }
}

/// Where a listing resumes. Opaque to callers: each store writes and reads
/// its own (the last user listed, or a scan position); it only has to be
/// handed back as it came. Bounded and printable, so it can travel in a
/// URL query.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UsersCursor(String);

/// A cursor that cannot have come from a store: empty, longer than
/// [`UsersCursor::MAX_LEN`] bytes, or with a character outside printable
/// ASCII.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cursor")]
pub struct CursorError;

impl UsersCursor {
    /// The longest cursor, in bytes (a user id is at most 128).
    pub const MAX_LEN: usize = 160;

    /// Checks the shape only; the store that reads it checks the rest.
    ///
    /// # Errors
    /// [`CursorError`].
    pub fn parse(cursor: &str) -> Result<Self, CursorError> {
        let printable = cursor.bytes().all(|b| b.is_ascii_graphic());
        if cursor.is_empty() || cursor.len() > Self::MAX_LEN || !printable {
            return Err(CursorError);
        }
        Ok(Self(cursor.to_owned()))
    }

    /// The cursor's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UsersCursor {
    type Error = CursorError;

    fn try_from(cursor: String) -> Result<Self, Self::Error> {
        Self::parse(&cursor)
    }
}

impl From<UsersCursor> for String {
    fn from(cursor: UsersCursor) -> Self {
        cursor.0
    }
}

impl std::fmt::Display for UsersCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One page of a period's users and their sums.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UsersPage {
    /// Users whose sums are not both zero, with those sums.
    pub users: Vec<(UserId, UserSpend)>,
    /// Where the next page starts; `None` when the listing is complete.
    pub next: Option<UsersCursor>,
}

impl UsersPage {
    /// The page the reference model gives for an ordered store (memory,
    /// SQL): users in [`UserId`] order after the one `cursor` names (a
    /// cursor is the last user of the page before).
    ///
    /// # Errors
    /// [`CursorError`] when `cursor` is not a user id.
    pub fn from_model(
        budget: &CommunityBudget,
        period: Period,
        cursor: Option<&UsersCursor>,
        size: PageSize,
    ) -> Result<Self, CursorError> {
        let after = cursor.map(user_after).transpose()?;
        let counters = budget.counters(period);
        let mut rest = counters
            .users
            .into_iter()
            .filter(|(u, _)| after.as_ref().is_none_or(|a| u > a));
        let users: Vec<_> = rest.by_ref().take(size.get()).collect();
        Ok(Self::ordered(users, rest.next().is_some()))
    }

    /// A page of an ordered store: `more` tells whether users follow the
    /// last one, which then is the cursor.
    pub fn ordered(users: Vec<(UserId, UserSpend)>, more: bool) -> Self {
        let next = if more {
            users
                .last()
                .and_then(|(u, _)| UsersCursor::parse(u.as_str()).ok())
        } else {
            None
        };
        Self { users, next }
    }
}

/// The user an ordered store's cursor names.
///
/// # Errors
/// [`CursorError`] when the cursor is not a user id.
pub fn user_after(cursor: &UsersCursor) -> Result<UserId, CursorError> {
    UserId::parse(cursor.as_str()).map_err(|_| CursorError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_outside_one_to_a_thousand_are_refused() {
        assert_eq!(PageSize::new(0), Err(PageSizeError(0)));
        assert_eq!(PageSize::new(1_001), Err(PageSizeError(1_001)));
        assert_eq!(PageSize::new(u64::MAX), Err(PageSizeError(u64::MAX)));
        assert_eq!(PageSize::new(1_000).map(PageSize::get), Ok(1_000));
    }

    #[test]
    fn cursors_are_short_printable_and_not_empty() {
        assert_eq!(UsersCursor::parse(""), Err(CursorError));
        assert_eq!(UsersCursor::parse("a b"), Err(CursorError));
        assert_eq!(UsersCursor::parse(&"x".repeat(161)), Err(CursorError));
        assert_eq!(UsersCursor::parse("é"), Err(CursorError));
        assert!(UsersCursor::parse("alice").is_ok());
    }
}
