//! Framed records: `u32 payload_len | u32 crc32(payload) | u32 crc32(first 8 bytes) | payload`,
//! little-endian (docs/format.md, "Frames").
//!
//! The header has its own checksum so that a damaged length is told apart from a frame whose
//! end was never written: a header that checks out but runs past the end of the data is
//! [`FrameError::Incomplete`] (a torn tail), anything that fails a checksum is
//! [`FrameError::Corrupt`].

use super::Corruption;

pub const FRAME_HEADER_BYTES: usize = 12;

/// Largest payload a frame may carry (one transaction: the ledger limits a tx to less).
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = 512 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The data ends before the frame does; `needed` is the frame's full length when known.
    Incomplete {
        needed: Option<usize>,
    },
    Corrupt(Corruption),
}

/// Appends one frame holding `payload` to `out`.
#[cfg(test)]
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    encode_with(out, |o| o.extend_from_slice(payload));
}

/// Bodies at least this long take their precomputed crc32 state; shorter ones are
/// checksummed again.
const COMBINE_BYTES_MIN: usize = 4096;

/// Appends one frame whose payload is `head || body`, given the crc32 state of `body`
/// computed earlier (on another thread, say): only `head` is checksummed here.
pub fn encode_parts(out: &mut Vec<u8>, head: &[u8], body: &[u8], body_crc: &crc32fast::Hasher) {
    encode_parts_head(out, head, body, body_crc);
    out.extend_from_slice(body);
}

/// [`encode_parts`] without the body: the frame header and `head`, for a caller that writes
/// a large body straight from where it is instead of copying it.
pub fn encode_parts_head(
    out: &mut Vec<u8>,
    head: &[u8],
    body: &[u8],
    body_crc: &crc32fast::Hasher,
) {
    let len = super::len_u32(head.len() + body.len());
    let mut pcrc = crc32fast::Hasher::new();
    pcrc.update(head);
    // Combining costs about a microsecond whatever the length; checksumming a short body
    // again is cheaper.
    if body.len() <= COMBINE_BYTES_MIN {
        pcrc.update(body);
    } else {
        pcrc.combine(body_crc);
    }
    out.extend_from_slice(&header(len, pcrc.finalize()));
    out.extend_from_slice(head);
}

/// Appends one frame to `out` whose payload `write` appends in place (no extra copy).
pub fn encode_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    write(out);
    let payload = &out[start + FRAME_HEADER_BYTES..];
    debug_assert!(!payload.is_empty() && payload.len() <= FRAME_PAYLOAD_BYTES_MAX as usize);
    let header = header(super::len_u32(payload.len()), crc32fast::hash(payload));
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&header);
}

/// The header of a frame whose payload has `len` bytes and checksum `pcrc`.
fn header(len: u32, pcrc: u32) -> [u8; FRAME_HEADER_BYTES] {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&pcrc.to_le_bytes());
    let hcrc = crc32fast::hash(&h[..8]);
    h[8..].copy_from_slice(&hcrc.to_le_bytes());
    h
}

/// The header at the start of `buf`, checked: the payload's length and checksum.
fn read_header(buf: &[u8]) -> Result<(usize, u32), FrameError> {
    let Some(h) = buf.get(..FRAME_HEADER_BYTES) else {
        return Err(FrameError::Incomplete { needed: None });
    };
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let (len, pcrc, hcrc) = (word(0), word(4), word(8));
    if crc32fast::hash(&h[..8]) != hcrc {
        return Err(FrameError::Corrupt(Corruption::FrameHeaderCrc));
    }
    if len == 0 || len > FRAME_PAYLOAD_BYTES_MAX {
        return Err(FrameError::Corrupt(Corruption::FrameLength(len)));
    }
    Ok((len as usize, pcrc))
}

/// Decodes the frame at the start of `buf`: its payload and its total length.
pub fn decode(buf: &[u8]) -> Result<(&[u8], usize), FrameError> {
    let (len, pcrc) = read_header(buf)?;
    let total = FRAME_HEADER_BYTES + len;
    if buf.len() < total {
        return Err(FrameError::Incomplete {
            needed: Some(total),
        });
    }
    let payload = &buf[FRAME_HEADER_BYTES..total];
    if crc32fast::hash(payload) != pcrc {
        return Err(FrameError::Corrupt(Corruption::FramePayloadCrc));
    }
    Ok((payload, total))
}

/// The full length of the frame at the start of `buf` as its header gives it, if the header
/// checks out (whether or not the payload does, or is there at all).
pub fn claimed_len(buf: &[u8]) -> Option<usize> {
    read_header(buf)
        .ok()
        .map(|(len, _)| FRAME_HEADER_BYTES + len)
}

/// The payload of the one frame that `buf` holds exactly (a frame located by an index):
/// anything else, a shorter or longer frame included, is corruption.
pub fn decode_exact(buf: &[u8]) -> Result<&[u8], Corruption> {
    match decode(buf) {
        Ok((payload, n)) if n == buf.len() => Ok(payload),
        Ok((_, n)) => Err(Corruption::FrameLength(super::len_u32(n))),
        Err(FrameError::Corrupt(r)) => Err(r),
        Err(FrameError::Incomplete { .. }) => Err(Corruption::FrameTruncated),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parts_encode_like_a_whole(head in proptest::collection::vec(any::<u8>(), 1..300), body in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut whole = head.clone();
            whole.extend_from_slice(&body);
            let mut a = Vec::new();
            encode(&whole, &mut a);
            let mut crc = crc32fast::Hasher::new();
            crc.update(&body);
            let mut b = Vec::new();
            encode_parts(&mut b, &head, &body, &crc);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn round_trip(payload in proptest::collection::vec(any::<u8>(), 1..2000)) {
            let mut buf = Vec::new();
            encode(&payload, &mut buf);
            let (p, n) = decode(&buf).unwrap();
            prop_assert_eq!(p, &payload[..]);
            prop_assert_eq!(n, buf.len());
        }

        #[test]
        fn any_truncation_is_incomplete(payload in proptest::collection::vec(any::<u8>(), 1..500), cut in 0usize..512) {
            let mut buf = Vec::new();
            encode(&payload, &mut buf);
            let cut = cut % buf.len();
            let incomplete = matches!(decode(&buf[..cut]), Err(FrameError::Incomplete { .. }));
            prop_assert!(incomplete, "cut at {} not incomplete", cut);
        }

        #[test]
        fn any_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..500), bit in 0usize..4096) {
            let mut buf = Vec::new();
            encode(&payload, &mut buf);
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            // Never a wrong payload: either an error, or (never, for crc32 on one bit) Ok.
            match decode(&buf) {
                Err(FrameError::Corrupt(_)) => {}
                other => prop_assert!(false, "flip of bit {} gave {:?}", bit, other),
            }
        }
    }
}
