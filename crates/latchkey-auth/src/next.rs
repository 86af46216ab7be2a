//! Safe `next` redirects: only a path on this site, never a URL that leaves it.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// The longest `next` worth keeping.
const MAX_LEN: usize = 2048;

/// Returns `next` if it is a local path, else `None` (callers fall back to `/`).
///
/// Refused: anything not starting with a single `/` (`//host` and `/\host` are
/// protocol-relative to browsers), backslashes anywhere (some browsers read them as `/`),
/// control characters and whitespace (browsers strip them, which can turn `/\t/host` into
/// `//host`), and anything overlong.
///
/// ```
/// use latchkey_auth::next::safe_next;
/// assert_eq!(safe_next("/account?tab=devices"), Some("/account?tab=devices"));
/// assert_eq!(safe_next("//evil.example"), None);
/// ```
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= MAX_LEN
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then_some(next)
}

/// Where to go after a successful login or registration.
pub fn target(next: &str) -> &str {
    safe_next(next).unwrap_or("/")
}

/// Characters escaped when a path travels as the `next` query parameter.
const NEXT_QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'>')
    .add(b'=')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Percent-encodes a path and query for use as `?next=`.
///
/// ```
/// assert_eq!(latchkey_auth::next::encode("/cart?item=1&qty=2"), "/cart%3Fitem%3D1%26qty%3D2");
/// ```
pub fn encode(path_and_query: &str) -> String {
    utf8_percent_encode(path_and_query, NEXT_QUERY).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_kept() {
        for next in ["/", "/account", "/account?tab=devices&x=1", "/a/b#frag", "/%2F%2Fevil.com"] {
            assert_eq!(safe_next(next), Some(next));
        }
    }

    #[test]
    fn hostile_values_are_refused() {
        let hostile = [
            "",
            "account",
            "https://evil.com",
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "/\t/evil.com",
            "/\n/evil.com",
            " //evil.com",
            "javascript:alert(1)",
            "http:/evil.com",
            "/ /evil.com",
        ];
        for next in hostile {
            assert_eq!(safe_next(next), None, "{next:?}");
            assert_eq!(target(next), "/");
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(MAX_LEN))), None);
    }

    #[test]
    fn encoding_keeps_the_query_in_one_parameter() {
        assert_eq!(encode("/account?tab=a&b=c"), "/account%3Ftab%3Da%26b%3Dc");
    }
}
