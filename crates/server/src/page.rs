//! Lists, a page at a time. Every list answers the same envelope, `{data, next_cursor,
//! has_more}`; a list that can grow without bound (withdrawals, ledger postings, reviews,
//! risk events, audit records) is read from a cursor: pass the `next_cursor` of one page as
//! `after` to get the next, until `has_more` is false. Cursors are opaque: a key of the last row
//! listed (its time and id), so rows added meanwhile never shift a page already read and no
//! row is reached only by an offset. A list bounded by what configures it (assets, a user's
//! passkeys) is one page.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use strongroom_store::Keyset;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// A page of a list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Whether another page follows.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// A whole list, bounded by what configures it: one page.
    pub fn all(data: Vec<T>) -> Self {
        Page { data, next_cursor: None, has_more: false }
    }

    /// A page and the cursor that follows it (none on the last page).
    pub fn new(data: Vec<T>, next_cursor: Option<String>) -> Self {
        Page { has_more: next_cursor.is_some(), data, next_cursor }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
            has_more: self.has_more,
        }
    }
}

/// The query every cursor-paged list takes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `next_cursor` of the page before; from the start of the list when absent.
    pub after: Option<String>,
    /// 1 to 1000; default 100.
    pub limit: Option<u32>,
}

/// How many rows to read for a page of `limit`: one more, to learn whether another follows.
pub(crate) fn read_size(limit: u32) -> u32 {
    limit.saturating_add(1)
}

/// Rows read with `read_size(limit)`: the first `limit`, and the cursor of the last of them
/// when more follow.
pub(crate) fn split<R>(
    mut rows: Vec<R>,
    limit: u32,
    key: impl Fn(&R) -> Keyset,
) -> (Vec<R>, Option<String>) {
    let limit = limit as usize;
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(|r| cursor(&key(r)));
    (rows, next)
}

/// The opaque text of a key.
pub fn cursor(k: &Keyset) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", k.at_ms, k.n, k.id))
}

/// The key an `after` cursor names; absent or empty: the start of the list.
pub fn after(text: Option<&str>) -> Result<Option<Keyset>, ApiError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(None) };
    let invalid = || {
        ApiError::bad_request("invalid_cursor", "after: not a cursor from this list (next_cursor)")
    };
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    let plain = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = plain.splitn(3, ':');
    let at_ms = parts.next().and_then(|p| p.parse::<i64>().ok()).ok_or_else(invalid)?;
    let n = parts.next().and_then(|p| p.parse::<i64>().ok()).ok_or_else(invalid)?;
    let id = parts.next().filter(|id| !id.is_empty()).ok_or_else(invalid)?.to_owned();
    Ok(Some(Keyset { at_ms, id, n }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_text_is_refused() {
        let k = Keyset { at_ms: -5, id: "3f0c:odd:id".into(), n: 7 };
        assert_eq!(after(Some(&cursor(&k))).ok().flatten(), Some(k));
        assert_eq!(after(None).ok(), Some(None));
        assert_eq!(after(Some("")).ok(), Some(None));
        for bad in [
            "evt_12",
            "12",
            "!!",
            &URL_SAFE_NO_PAD.encode("1:2:"),
            &URL_SAFE_NO_PAD.encode("x:2:a"),
        ] {
            let e = after(Some(bad)).err().map(|e| e.code);
            assert_eq!(e, Some("invalid_cursor"), "{bad}");
        }
    }

    #[test]
    fn a_page_holds_limit_rows_and_a_cursor_only_when_more_follow() {
        let key = |r: &i64| Keyset { at_ms: *r, id: format!("r{r}"), n: 0 };
        let (rows, next) = split(vec![1, 2, 3], 3, key);
        assert_eq!((rows, next), (vec![1, 2, 3], None));
        let (rows, next) = split(vec![1, 2, 3, 4], 3, key);
        assert_eq!(rows, vec![1, 2, 3]);
        assert_eq!(after(next.as_deref()).ok().flatten(), Some(key(&3)));
    }
}
