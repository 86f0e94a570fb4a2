//! Keys and values whose meaning the chain commits to (docs/format.md, "References and
//! sorted sets"): a **reference** is an entry flagged as one whose value names another key,
//! and a **sorted-set member** is an entry under a reserved key that carries the set, the
//! score, the member key and the tx it is bound to. Pure encodings, shared by the server that
//! writes them and the client that verifies what was written.

use super::KEY_BYTES_MAX;

/// The prefix of every sorted-set member key (inside the database's own `\0chainlog/`).
pub const ZSET_PREFIX: &[u8] = b"\0chainlog/z/";

/// The prefix the database keeps for itself; only sorted-set member keys may be written
/// under it by a client's call.
pub const RESERVED_PREFIX: &[u8] = b"\0chainlog/";

/// Why a reference or a sorted-set member cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvError {
    /// An empty set name, member key or referenced key.
    Empty(&'static str),
    /// The encoded key would exceed [`KEY_BYTES_MAX`].
    TooLong { len: usize, max: usize },
    /// A score that is NaN (it has no place in an order).
    NanScore,
    /// A key under the database's reserved prefix.
    Reserved(&'static str),
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::Empty(what) => write!(f, "the {what} is empty"),
            KvError::TooLong { len, max } => {
                write!(f, "the encoded key is {len} bytes, more than {max}")
            }
            KvError::NanScore => f.write_str("the score is NaN"),
            KvError::Reserved(what) => write!(f, "the {what} starts with the reserved prefix"),
        }
    }
}

impl std::error::Error for KvError {}

/// A reference's value: `u64 at_tx` (little-endian; 0: the referenced key's version as of
/// the read) then the referenced key.
pub fn reference_value(target: &[u8], at_tx: u64) -> Result<Vec<u8>, KvError> {
    check_member(target, "referenced key")?;
    let mut v = Vec::with_capacity(8 + target.len());
    v.extend_from_slice(&at_tx.to_le_bytes());
    v.extend_from_slice(target);
    Ok(v)
}

/// The referenced key and the tx a reference is bound to (0: unbound), or `None` if
/// `value` is not a reference's value.
pub fn parse_reference(value: &[u8]) -> Option<(&[u8], u64)> {
    let (at, target) = value.split_at_checked(8)?;
    check_member(target, "referenced key").ok()?;
    Some((target, u64::from_le_bytes(at.try_into().ok()?)))
}

fn check_member(key: &[u8], what: &'static str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::Empty(what));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(KvError::TooLong {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err(KvError::Reserved(what));
    }
    Ok(())
}

/// A score's 8 bytes, ordered as the numbers are: the IEEE 754 bits, big-endian, with the
/// sign bit flipped for a positive number and every bit flipped for a negative one. `-0.0`
/// is `0.0`.
pub fn score_bytes(score: f64) -> Result<[u8; 8], KvError> {
    if score.is_nan() {
        return Err(KvError::NanScore);
    }
    let bits = if score == 0.0 { 0 } else { score.to_bits() };
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    Ok(ordered.to_be_bytes())
}

/// The score of [`score_bytes`]'s output.
pub fn score_of(b: [u8; 8]) -> f64 {
    let ordered = u64::from_be_bytes(b);
    f64::from_bits(if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    })
}

/// The key prefix every member of `set` shares: `ZSET_PREFIX || u16 set_len (big-endian) ||
/// set`.
pub fn zset_prefix(set: &[u8]) -> Result<Vec<u8>, KvError> {
    if set.is_empty() {
        return Err(KvError::Empty("set name"));
    }
    let len = u16::try_from(set.len()).map_err(|_| KvError::TooLong {
        len: set.len(),
        max: KEY_BYTES_MAX,
    })?;
    let mut k = Vec::with_capacity(ZSET_PREFIX.len() + 2 + set.len() + 16);
    k.extend_from_slice(ZSET_PREFIX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(set);
    Ok(k)
}

/// A member's key: `zset_prefix(set) || score_bytes(score) || u64 at_tx (big-endian; 0:
/// unbound) || member`. Keys of one set sort by score, then bound tx, then member.
pub fn zset_key(set: &[u8], score: f64, member: &[u8], at_tx: u64) -> Result<Vec<u8>, KvError> {
    check_member(member, "member key")?;
    let mut k = zset_prefix(set)?;
    k.extend_from_slice(&score_bytes(score)?);
    k.extend_from_slice(&at_tx.to_be_bytes());
    k.extend_from_slice(member);
    if k.len() > KEY_BYTES_MAX {
        return Err(KvError::TooLong {
            len: k.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(k)
}

/// One sorted-set member as its key encodes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZMember<'a> {
    pub set: &'a [u8],
    pub score: f64,
    /// The tx the member's version is read as of (0: its latest).
    pub at_tx: u64,
    pub member: &'a [u8],
}

/// The member a sorted-set key encodes, or `None` if `key` is not one.
pub fn parse_zset_key(key: &[u8]) -> Option<ZMember<'_>> {
    let rest = key.strip_prefix(ZSET_PREFIX)?;
    let (len, rest) = rest.split_at_checked(2)?;
    let len = usize::from(u16::from_be_bytes(len.try_into().ok()?));
    let (set, rest) = rest.split_at_checked(len)?;
    let (score, rest) = rest.split_at_checked(8)?;
    let (at, member) = rest.split_at_checked(8)?;
    let score: [u8; 8] = score.try_into().ok()?;
    let m = ZMember {
        set,
        score: score_of(score),
        at_tx: u64::from_be_bytes(at.try_into().ok()?),
        member,
    };
    // Only the canonical encoding: a key that re-encodes differently is not a member.
    (zset_key(set, m.score, member, m.at_tx).ok()?.as_slice() == key).then_some(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn references_round_trip_and_refuse_bad_targets() {
        let v = reference_value(b"target", 7).unwrap();
        assert_eq!(&v[..8], &7u64.to_le_bytes());
        assert_eq!(parse_reference(&v), Some((&b"target"[..], 7)));
        assert_eq!(parse_reference(&v[..8]), None, "no target");
        assert_eq!(parse_reference(b"short"), None);
        assert_eq!(
            reference_value(b"", 0),
            Err(KvError::Empty("referenced key"))
        );
        assert!(reference_value(b"\0chainlog/epoch", 0).is_err());
    }

    #[test]
    fn zset_keys_round_trip_and_refuse_what_has_no_order() {
        let k = zset_key(b"board", -2.5, b"alice", 3).unwrap();
        let m = parse_zset_key(&k).unwrap();
        assert_eq!(
            (m.set, m.score, m.at_tx, m.member),
            (&b"board"[..], -2.5, 3, &b"alice"[..])
        );
        assert_eq!(zset_key(b"s", f64::NAN, b"m", 0), Err(KvError::NanScore));
        assert!(zset_key(b"", 1.0, b"m", 0).is_err());
        assert!(
            zset_key(b"s", 1.0, &[b'm'; 1024], 0).is_err(),
            "too long once encoded"
        );
        assert_eq!(parse_zset_key(b"\0chainlog/epoch"), None);
        assert_eq!(score_bytes(-0.0), score_bytes(0.0));
    }

    proptest! {
        /// Byte order of encoded scores is numeric order, infinities included.
        #[test]
        fn score_bytes_sort_as_numbers(a in any::<f64>(), b in any::<f64>()) {
            prop_assume!(!a.is_nan() && !b.is_nan());
            let (ea, eb) = (score_bytes(a).unwrap(), score_bytes(b).unwrap());
            prop_assert_eq!(ea.cmp(&eb), a.partial_cmp(&b).unwrap());
            prop_assert_eq!(score_of(ea), if a == 0.0 { 0.0 } else { a });
        }
    }
}
