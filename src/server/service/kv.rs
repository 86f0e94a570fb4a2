//! References and sorted sets on the server side: the entries SetReference and ZAdd write
//! (with the condition each puts on the key it names), a read that follows a reference, and
//! ZScan. The encodings are `integrity::kv`'s, which the client verifies with.

use crate::integrity::{kv, EntryMeta, TxId, KEY_BYTES_MAX};
use crate::ledger::{KeyValue, Ledger, LedgerError, NewEntry, Order, Precondition};
use crate::server::convert::entry_wire;
use crate::server::status;
use crate::wire;
use tonic::Status;

/// Most members one ZScan returns, and its default.
const ZSCAN_LIMIT_MAX: u32 = 1000;
const ZSCAN_LIMIT_DEFAULT: u32 = 100;

fn refused(e: kv::KvError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn failed(reason: String) -> Status {
    status::ledger(LedgerError::PreconditionFailed { index: 0, reason })
}

/// The key `key` names must have a live value that is not a reference: as of `at_tx` when
/// bound (checked now: that version cannot change), else when the tx commits (returned as
/// a precondition for the writer, which checks it in commit order).
fn target_condition(
    ledger: &Ledger,
    key: &[u8],
    at_tx: TxId,
    what: &str,
) -> Result<Option<Precondition>, Status> {
    let as_of = if at_tx == 0 { TxId::MAX } else { at_tx };
    if at_tx > ledger.state().tx_id {
        return Err(failed(format!(
            "the {what} is bound to tx {at_tx}, after the last one ({})",
            ledger.state().tx_id
        )));
    }
    match ledger.get_at(key, as_of).map_err(status::ledger)? {
        None => Err(failed(format!(
            "the {what} {:?} has no live value{}",
            String::from_utf8_lossy(key),
            if at_tx == 0 {
                String::new()
            } else {
                format!(" as of tx {at_tx}")
            }
        ))),
        Some(kv) if kv.meta.reference => Err(failed(format!(
            "the {what} {:?} is a reference itself",
            String::from_utf8_lossy(key)
        ))),
        Some(_) => Ok((at_tx == 0).then(|| Precondition::MustExist(key.to_vec()))),
    }
}

/// The entry a SetReference writes, and the condition on the referenced key.
pub(super) fn reference(
    ledger: &Ledger,
    r: &wire::ReferenceRequest,
) -> Result<(NewEntry, Option<Precondition>), Status> {
    let value = kv::reference_value(&r.referenced_key, r.at_tx).map_err(refused)?;
    if r.key == r.referenced_key {
        return Err(Status::invalid_argument("a key cannot reference itself"));
    }
    let condition = target_condition(ledger, &r.referenced_key, r.at_tx, "referenced key")?;
    Ok((
        NewEntry {
            key: r.key.clone(),
            value,
            meta: EntryMeta::REFERENCE,
        },
        condition,
    ))
}

/// The entry a ZAdd writes, and the condition on the member's key.
pub(super) fn zadd(
    ledger: &Ledger,
    z: &wire::ZAddRequest,
) -> Result<(NewEntry, Option<Precondition>), Status> {
    let key = kv::zset_key(&z.set, z.score, &z.key, z.at_tx).map_err(refused)?;
    let condition = target_condition(ledger, &z.key, z.at_tx, "member key")?;
    Ok((NewEntry::put(key, Vec::new()), condition))
}

/// `kv` as a read answers it: a reference is followed (one step: a reference never names
/// another) to the referenced key's version as of its bound tx, else as of `as_of`; `None`
/// when that key has no live value then.
pub(super) fn resolve(
    ledger: &Ledger,
    kv: KeyValue,
    as_of: TxId,
) -> Result<Option<wire::Entry>, LedgerError> {
    if !kv.meta.reference {
        return Ok(Some(entry_wire(kv)));
    }
    let Some((target, bound)) = kv::parse_reference(&kv.value) else {
        return Err(LedgerError::BadReference { index: 0 });
    };
    let at = if bound == 0 { as_of } else { bound };
    Ok(ledger.get_at(target, at)?.map(|t| {
        let mut e = entry_wire(t);
        e.referenced_by = Some(wire::Reference {
            key: kv.key.clone(),
            tx: kv.tx,
            at_tx: bound,
        });
        e
    }))
}

/// ZScan: the set's members in score order, within the bounds, after the cursor.
pub(super) fn zscan(
    ledger: &Ledger,
    r: &wire::ZScanRequest,
) -> Result<wire::ZScanResponse, Status> {
    let prefix = kv::zset_prefix(&r.set).map_err(refused)?;
    let limit = match r.limit {
        0 => ZSCAN_LIMIT_DEFAULT,
        n if n > ZSCAN_LIMIT_MAX => {
            return Err(Status::invalid_argument(format!(
                "limit {n}: at most {ZSCAN_LIMIT_MAX}"
            )))
        }
        n => n,
    } as usize;
    let score = |s: Option<f64>, what| -> Result<Option<[u8; 8]>, Status> {
        s.map(|s| {
            kv::score_bytes(s).map_err(|_| Status::invalid_argument(format!("{what} is NaN")))
        })
        .transpose()
    };
    let (min, max) = (
        score(r.min_score, "min_score")?,
        score(r.max_score, "max_score")?,
    );
    let at = if r.at_tx == 0 {
        ledger.state().tx_id
    } else {
        r.at_tx
    };
    // Start at the bound the order meets first, unless the cursor is past it.
    let mut start = match (r.desc, min, max) {
        // Every key of a score is longer than prefix||score: "after" it is the first.
        (false, Some(min), _) => Some([&prefix[..], &min].concat()),
        // Every key of a score is before prefix||score||0xff…: "after" it, going down.
        (true, _, Some(max)) => Some([&prefix[..], &max, &[0xff; 8 + KEY_BYTES_MAX + 1]].concat()),
        _ => None,
    };
    if !r.after.is_empty() {
        if !r.after.starts_with(&prefix) {
            return Err(Status::invalid_argument("after: not a cursor of this set"));
        }
        let past = |s: &Vec<u8>| if r.desc { r.after < *s } else { r.after > *s };
        if start.as_ref().is_none_or(past) {
            start = Some(r.after.clone());
        }
    }
    let order = if r.desc { Order::Desc } else { Order::Asc };
    let members = ledger
        .scan(&prefix, start.as_deref(), limit, order, at)
        .map_err(status::ledger)?;
    let mut entries = Vec::with_capacity(members.len());
    for m in members {
        let Some(z) = kv::parse_zset_key(&m.key) else {
            continue;
        };
        let s = kv::score_bytes(z.score).map_err(refused)?;
        if min.is_some_and(|min| s < min) || max.is_some_and(|max| s > max) {
            break;
        }
        let as_of = if z.at_tx == 0 { at } else { z.at_tx };
        let entry = ledger
            .get_at(z.member, as_of)
            .map_err(status::ledger)?
            .map(entry_wire);
        entries.push(wire::ZEntry {
            set: z.set.to_vec(),
            key: z.member.to_vec(),
            score: z.score,
            at_tx: z.at_tx,
            entry,
            tx: m.tx,
            cursor: m.key.clone(),
        });
    }
    Ok(wire::ZScanResponse { entries, at_tx: at })
}
