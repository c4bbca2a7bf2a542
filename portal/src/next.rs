//! Where the browser goes after signing in. `next` comes from a URL anyone can craft and send to
//! a guardian, so it may only name a path on this site; anything else falls back to the person's
//! home page. The rule, and the table of cases it is tested with, are shared with
//! `web-client/js/next.js`, the sign-in page's own check.

use url::{Position, Url};

/// Longer than any page of ours with its query; bounds what the `next` cookie carries.
const MAX_LEN: usize = 2048;

/// How many layers of percent-encoding are looked through: a proxy or file server that decodes
/// once more than the browser must not find a way off the site either.
const DECODE_DEPTH: usize = 3;

/// `next` as a same-origin path (normalised: `/a/../b` becomes `/b`), or `None`.
///
/// Refused: anything not starting with a single `/`; whitespace, control characters and
/// backslashes anywhere (browsers drop tab and newline inside URLs and read `\` as `/`, so
/// `/\t/evil.example` and `/\evil.example` both mean `//evil.example`, another host); a path
/// that becomes `//…` or holds a backslash or control character once percent-decoded
/// (`/%2F%2Fevil.example`, `/%09/evil.example`); and the sign-in page itself (a loop).
pub fn safe_next(next: Option<&str>) -> Option<String> {
    let raw = next?;
    if raw.is_empty() || raw.len() > MAX_LEN {
        return None;
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) || raw.contains('\\') {
        return None;
    }
    if !raw.starts_with('/') || raw.starts_with("//") {
        return None;
    }
    let base = Url::parse("https://this-site.invalid/").ok()?;
    let url = base.join(raw).ok()?;
    if url.origin() != base.origin() {
        return None;
    }
    let path = url.path();
    // Dot segments are resolved by `join`: `/.//evil.example` ends up as `//evil.example`.
    if path.starts_with("//") || path == "/signin.html" {
        return None;
    }
    let mut layer = path.to_owned();
    for _ in 0..DECODE_DEPTH {
        let decoded = percent_decode(&layer)?;
        if decoded.starts_with("//")
            || decoded.contains('\\')
            || decoded.chars().any(char::is_control)
        {
            return None;
        }
        if decoded == layer {
            break;
        }
        layer = decoded;
    }
    Some(url[Position::BeforePath..].to_owned())
}

/// One layer of `%XX` decoding; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table `tests/browser/next.test.mjs` runs against the sign-in page's check.
    const CASES: &str = include_str!("../../tests/browser/safe-next-cases.json");

    #[derive(serde::Deserialize)]
    struct Cases {
        refused: Vec<String>,
        accepted: Vec<(String, String)>,
    }

    fn cases() -> Cases {
        serde_json::from_str(CASES).expect("the shared table parses")
    }

    #[test]
    fn other_sites_and_tricks_are_refused() {
        let cases = cases();
        assert!(cases.refused.len() > 20);
        for value in &cases.refused {
            assert_eq!(safe_next(Some(value)), None, "{value:?}");
        }
        assert_eq!(safe_next(None), None);
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(MAX_LEN)))), None);
    }

    #[test]
    fn same_site_paths_are_kept() {
        for (value, expected) in cases().accepted {
            assert_eq!(
                safe_next(Some(&value)).as_deref(),
                Some(expected.as_str()),
                "{value:?}"
            );
        }
    }
}
