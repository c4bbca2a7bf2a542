//! Just enough SDP reading to hold a publish offer against the token, before the media plane
//! negotiates anything.

use crate::protocol::Kind;

/// One `m=` section of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub mid: Option<String>,
    /// `None` for non-media sections (data channels).
    pub kind: Option<Kind>,
    /// The offerer sends on it (`sendonly` or `sendrecv`, the default).
    pub sending: bool,
}

/// A camera, a microphone and a screen need three; leave room for renegotiation history, but keep
/// a hostile offer from making the media thread negotiate thousands of sections.
pub const MAX_SECTIONS: usize = 16;

/// The media sections of an SDP, or why it is not one (or not one we take).
pub fn sections(sdp: &str) -> Result<Vec<Section>, String> {
    if !sdp.starts_with("v=0") {
        return Err("an SDP starts with `v=0`".into());
    }
    let mut out: Vec<Section> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            if out.len() == MAX_SECTIONS {
                return Err(format!(
                    "an offer may have at most {MAX_SECTIONS} media sections"
                ));
            }
            let kind = match rest.split(' ').next() {
                Some("audio") => Some(Kind::Audio),
                Some("video") => Some(Kind::Video),
                _ => None,
            };
            // The port 0 means the section is rejected/disabled.
            let disabled = rest.split(' ').nth(1) == Some("0");
            out.push(Section {
                mid: None,
                kind,
                sending: !disabled,
            });
            continue;
        }
        let Some(section) = out.last_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid.trim().to_owned());
        } else if line == "a=recvonly" || line == "a=inactive" {
            section.sending = false;
        }
    }
    if out.is_empty() {
        return Err("the SDP has no media sections".into());
    }
    // Checks against the track list find a mid's first section; a second one with the same mid
    // would go unchecked.
    for (i, section) in out.iter().enumerate() {
        if let Some(mid) = &section.mid
            && out[..i].iter().any(|s| s.mid.as_ref() == Some(mid))
        {
            return Err(format!("mid {mid} is used by two m= sections"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n";
        let s = sections(sdp).expect("parses");
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[0],
            Section {
                mid: Some("0".into()),
                kind: Some(Kind::Audio),
                sending: true
            }
        );
        assert!(!s[1].sending);
        assert!(!s[2].sending);
        assert_eq!(s[3].kind, None);
        assert!(sections("hello").is_err());
        let many = format!(
            "v=0\r\n{}",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(MAX_SECTIONS + 1)
        );
        assert!(sections(&many).unwrap_err().contains("at most"));
        assert!(sections("v=0\r\n").is_err());
        let twice = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        assert!(sections(twice).unwrap_err().contains("mid 1"));
    }
}
