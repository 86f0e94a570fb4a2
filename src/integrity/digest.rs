use std::fmt;

/// Length in bytes of every digest in chainlog.
pub const DIGEST_BYTES: usize = 32;

/// A BLAKE3 output. Named `Digest`, not `Hash`, to keep clear of `std::hash::Hash`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, std::hash::Hash)]
pub struct Digest(pub [u8; DIGEST_BYTES]);

impl Digest {
    pub const ZERO: Digest = Digest([0; DIGEST_BYTES]);

    pub fn as_bytes(&self) -> &[u8; DIGEST_BYTES] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        super::hex::encode(&self.0)
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(s: &str) -> Option<Digest> {
        Digest::from_slice(&super::hex::decode(s)?)
    }

    /// For messages: the digest if `bytes` is 32 bytes long, else zero.
    pub fn from_slice_lossy(bytes: &[u8]) -> Digest {
        Digest::from_slice(bytes).unwrap_or_default()
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Digest> {
        <[u8; DIGEST_BYTES]>::try_from(bytes).ok().map(Digest)
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Digest(*h.as_bytes())
    }
}

impl From<Digest> for Vec<u8> {
    fn from(d: Digest) -> Vec<u8> {
        d.0.to_vec()
    }
}

impl TryFrom<Vec<u8>> for Digest {
    type Error = Vec<u8>;
    fn try_from(v: Vec<u8>) -> Result<Self, Self::Error> {
        Digest::from_slice(&v).ok_or(v)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Digest::from(blake3::hash(b"x"));
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex("zz"), None);
        assert_eq!(Digest::from_hex(&"g".repeat(64)), None);
    }
}
