//! Signed states: a server with a signing key signs `(database identity, tx id, Alh,
//! timestamp)` with Ed25519, so a client can check a state came from that server, and an
//! auditor can hold a server to a state it signed.

use super::{Digest, TxId};

/// Domain separation for the signed message.
pub const STATE_SIGNATURE_CONTEXT: &[u8] = b"chainlog/state/v1";

/// The bytes signed for a state: the context, then `u16 len || uuid text`, `u64 tx_id`, the
/// 32-byte Alh and `u64 timestamp_ms`, integers little-endian. An identity longer than a u16
/// can count is never a database's (they are UUIDs): it is encoded with the length 65535, so
/// no state of a real database can match it.
pub fn state_message(uuid: &str, tx_id: TxId, alh: &Digest, timestamp_ms: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(STATE_SIGNATURE_CONTEXT.len() + 2 + uuid.len() + 48);
    m.extend_from_slice(STATE_SIGNATURE_CONTEXT);
    m.extend_from_slice(&u16::try_from(uuid.len()).unwrap_or(u16::MAX).to_le_bytes());
    m.extend_from_slice(uuid.as_bytes());
    m.extend_from_slice(&tx_id.to_le_bytes());
    m.extend_from_slice(&alh.0);
    m.extend_from_slice(&timestamp_ms.to_le_bytes());
    m
}

pub fn sign_state(
    key: &ed25519_dalek::SigningKey,
    uuid: &str,
    tx_id: TxId,
    alh: &Digest,
    timestamp_ms: u64,
) -> [u8; 64] {
    use ed25519_dalek::Signer;
    key.sign(&state_message(uuid, tx_id, alh, timestamp_ms))
        .to_bytes()
}

/// Verifies a state signature made by `key`.
pub fn verify_state(
    key: &ed25519_dalek::VerifyingKey,
    uuid: &str,
    tx_id: TxId,
    alh: &Digest,
    timestamp_ms: u64,
    signature: &[u8],
) -> bool {
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(&state_message(uuid, tx_id, alh, timestamp_ms), &sig)
        .is_ok()
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let alh = Digest([1; 32]);
        let sig = sign_state(&key, "u", 5, &alh, 99);
        let vk = key.verifying_key();
        assert!(verify_state(&vk, "u", 5, &alh, 99, &sig));
        assert!(!verify_state(&vk, "u", 6, &alh, 99, &sig));
        assert!(!verify_state(&vk, "v", 5, &alh, 99, &sig));
        assert!(!verify_state(&vk, "u", 5, &alh, 98, &sig));
        assert!(!verify_state(&vk, "u", 5, &alh, 99, &sig[..63]));
    }
}
