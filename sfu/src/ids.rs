//! Identifiers shared by the media and control planes.

use std::fmt;
use std::sync::Arc;

/// One participant's session in a room. Allocated by the control plane; unique per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

/// One published track. Allocated by the media plane; unique per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u64);

/// A room's name, as carried in join tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub Arc<str>);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA_{:x}", self.0)
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TR_{:x}", self.0)
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RoomId {
    fn from(s: &str) -> Self {
        RoomId(Arc::from(s))
    }
}

impl ParticipantId {
    /// Parses the `PA_<hex>` form used on the wire.
    pub fn parse(s: &str) -> Option<Self> {
        u64::from_str_radix(s.strip_prefix("PA_")?, 16)
            .ok()
            .map(Self)
    }
}

impl TrackId {
    /// Parses the `TR_<hex>` form used on the wire.
    pub fn parse(s: &str) -> Option<Self> {
        u64::from_str_radix(s.strip_prefix("TR_")?, 16)
            .ok()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_round_trip() {
        let p = ParticipantId(0xbeef);
        assert_eq!(p.to_string(), "PA_beef");
        assert_eq!(ParticipantId::parse("PA_beef"), Some(p));
        assert_eq!(TrackId::parse(&TrackId(7).to_string()), Some(TrackId(7)));
        assert_eq!(TrackId::parse("PA_7"), None);
        assert_eq!(ParticipantId::parse("PA_zz"), None);
    }
}
