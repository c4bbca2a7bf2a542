//! What a client is told when its SDP cannot be read or negotiated.
//!
//! str0m's SDP parser (combine) reports *where* it stopped as the memory address of the server's
//! copy of the text (`Parse error at PointerOffset(0x55d0…)`). That tells the client nothing
//! about its SDP and tells an attacker where the heap is. The address is turned into a line
//! number of the client's own text here, and anything else that looks like an address is cut, so
//! no error leaves the media plane with one.

use std::fmt::Write;

/// Longest message a client gets: enough for the line, what was found and what was expected.
const MAX_MESSAGE_CHARS: usize = 300;
/// Hex digits from which `0x…` is taken for an address rather than a value such as a payload type.
const ADDRESS_DIGITS: usize = 6;

/// Why `sdp` could not be parsed, from the parser's `error` text: the line, what was found there
/// and what was expected, without memory addresses. For example:
/// ``line 5 (`m=audio nine …`): Missing a=rtp_map:111 for mid: 0``.
pub(crate) fn parse_failure(sdp: &str, error: &str) -> String {
    let mut location = None;
    let mut details = Vec::new();
    for line in error.lines() {
        let line = line.trim();
        let line = line.strip_prefix("SDP parse:").map_or(line, str::trim);
        if let Some(position) = line.strip_prefix("Parse error at") {
            location = line_number(sdp, position.trim());
        } else if !line.is_empty() {
            details.push(without_addresses(line));
        }
    }
    let mut out = String::new();
    if let Some(n) = location {
        let _ = write!(out, "line {n}");
        if let Some(text) = sdp_line(sdp, location) {
            let _ = write!(out, " (`{text}`)");
        }
        if !details.is_empty() {
            out.push_str(": ");
        }
    }
    out.push_str(&details.join("; "));
    if out.is_empty() {
        out.push_str("not an SDP");
    }
    truncate(out)
}

/// A negotiation error's text, without memory addresses and bounded in length.
pub(crate) fn negotiation_failure(error: &str) -> String {
    truncate(without_addresses(error.trim()))
}

/// The 1-based line of `sdp` that the parser's position (`PointerOffset(0x…)`, the address of a
/// byte of `sdp`) points into; `None` if it is not an address inside `sdp`.
fn line_number(sdp: &str, position: &str) -> Option<usize> {
    let hex = position
        .strip_prefix("PointerOffset(")?
        .strip_suffix(')')?
        .strip_prefix("0x")?;
    let address = usize::from_str_radix(hex, 16).ok()?;
    let offset = address.checked_sub(sdp.as_ptr() as usize)?;
    let before = sdp.as_bytes().get(..offset)?;
    Some(before.iter().filter(|b| **b == b'\n').count() + 1)
}

/// The text of line `n` (1-based) of `sdp`, shortened, for the message.
fn sdp_line(sdp: &str, n: Option<usize>) -> Option<String> {
    let line = sdp.lines().nth(n?.checked_sub(1)?)?.trim_end_matches('\r');
    if line.is_empty() {
        return None;
    }
    const SHOWN: usize = 60;
    let mut shown: String = line.chars().take(SHOWN).collect();
    if line.chars().count() > SHOWN {
        shown.push('…');
    }
    Some(shown)
}

/// `text` with every `0x` followed by at least [`ADDRESS_DIGITS`] hex digits replaced, and
/// combine's `PointerOffset(…)` wrapper removed with it.
pub(crate) fn without_addresses(text: &str) -> String {
    let text = text.replace("PointerOffset(", "(");
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
            let digits = bytes[i + 2..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            if digits >= ADDRESS_DIGITS {
                out.push_str("(address)");
                i += 2 + digits;
                continue;
            }
        }
        // Copy one whole character (addresses are ASCII, so this never splits one).
        let len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + len]);
        i += len;
    }
    out
}

fn truncate(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_MESSAGE_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::change::{SdpAnswer, SdpOffer};

    const VALID_START: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

    fn assert_no_address(message: &str) {
        assert!(!message.contains("0x"), "{message}");
        assert!(!message.contains("PointerOffset"), "{message}");
    }

    #[test]
    fn str0m_parse_errors_become_a_line_and_what_was_wrong() {
        // A media line whose port is not a number: str0m refuses it at line 5.
        let sdp =
            format!("{VALID_START}m=audio nine UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n");
        let raw = SdpAnswer::from_sdp_string(&sdp)
            .expect_err("a port that is not a number")
            .to_string();
        // What str0m says by itself, so this test notices if that ever changes.
        assert!(raw.contains("PointerOffset(0x"), "{raw}");

        let message = parse_failure(&sdp, &raw);
        assert_no_address(&message);
        assert!(message.starts_with("line 5 "), "{message}");
        assert!(message.contains("m=audio nine"), "{message}");
        // And what was wrong there (here str0m's own words about the section).
        let why = message.split_once("): ").map(|(_, why)| why);
        assert!(why.is_some_and(|w| w.len() > 5), "{message}");

        let offer_raw = SdpOffer::from_sdp_string("v=x\r\n")
            .expect_err("not SDP")
            .to_string();
        let message = parse_failure("v=x\r\n", &offer_raw);
        assert_no_address(&message);
        assert!(message.starts_with("line 1 "), "{message}");
    }

    #[test]
    fn a_position_outside_the_text_gives_no_line() {
        let message = parse_failure(
            "v=0\r\n",
            "SDP parse: Parse error at PointerOffset(0x10)\nUnexpected `x`\n",
        );
        assert_eq!(message, "Unexpected `x`");
    }

    #[test]
    fn addresses_are_cut_from_any_text() {
        assert_eq!(
            without_addresses("at PointerOffset(0x7ffd5e2c91a0) near 0XDEADBEEF00, pt 0x7f"),
            "at ((address)) near (address), pt 0x7f"
        );
        assert_eq!(without_addresses("日本語 0x123456"), "日本語 (address)");
        assert_eq!(
            negotiation_failure("remote sdp: No m-lines in offer"),
            "remote sdp: No m-lines in offer"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            negotiation_failure(&long).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }
}
