//! How answers are printed: JSON with `--json`, else lines for people.

use chainlog::wire;
use serde_json::json;

pub struct Out {
    pub json: bool,
}

impl Out {
    /// Prints `v` as one line of JSON, or `human()` as text.
    pub fn print(&self, v: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{v}");
        } else {
            println!("{}", human());
        }
    }
}

/// Bytes for people: as text when they are UTF-8, else as `hex:` and their hex, never
/// mangled.
pub fn text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => format!("hex:{}", hex(b)),
    }
}

/// Adds bytes to a JSON object under `name` when they are UTF-8, else under `<name>_hex` as
/// hex: JSON output never mangles a key or a value.
pub fn put_bytes(obj: &mut serde_json::Map<String, serde_json::Value>, name: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => obj.insert(name.to_string(), json!(s)),
        Err(_) => obj.insert(format!("{name}_hex"), json!(hex(b))),
    };
}

pub fn hex(b: &[u8]) -> String {
    chainlog::integrity::hex::encode(b)
}

pub fn header_json(h: &wire::TxHeader) -> serde_json::Value {
    json!({"id": h.id, "tx_id": h.id, "timestamp_us": h.timestamp_us,
           "timestamp": rfc3339_us(h.timestamp_us), "entry_count": h.entry_count,
           "prev_alh": hex(&h.prev_alh), "entries_root": hex(&h.entries_root),
           "history_size": h.history_size, "history_root": hex(&h.history_root),
           "epoch": h.epoch, "map_root": hex(&h.map_root)})
}

/// An entry as JSON: `key`/`value` (or `key_hex`/`value_hex`), `tx_id`, `deleted`,
/// `value_truncated` with `value_hash` for a value a truncation dropped, `expires_at`
/// (seconds since the Unix epoch) and `non_indexable` when set.
pub fn entry_json(e: &wire::Entry) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    put_bytes(&mut o, "key", &e.key);
    put_bytes(&mut o, "value", &e.value);
    o.insert("tx_id".into(), json!(e.tx));
    o.insert("deleted".into(), json!(e.deleted));
    if e.value_truncated {
        o.insert("value_truncated".into(), json!(true));
        o.insert("value_hash".into(), json!(hex(&e.value_hash)));
    }
    if let Some(m) = &e.metadata {
        if m.expires_at != 0 {
            o.insert("expires_at".into(), json!(m.expires_at));
        }
        if m.non_indexable {
            o.insert("non_indexable".into(), json!(true));
        }
        if m.reference {
            let mut r = serde_json::Map::new();
            if let Some((target, bound)) = chainlog::integrity::kv::parse_reference(&e.value) {
                put_bytes(&mut r, "referenced_key", target);
                r.insert("bound_tx_id".into(), json!(bound));
            }
            o.insert("reference".into(), serde_json::Value::Object(r));
        }
    }
    if let Some(r) = &e.referenced_by {
        let mut j = serde_json::Map::new();
        put_bytes(&mut j, "key", &r.key);
        j.insert("tx_id".into(), json!(r.tx));
        j.insert("bound_tx_id".into(), json!(r.at_tx));
        o.insert("referenced_by".into(), serde_json::Value::Object(j));
    }
    serde_json::Value::Object(o)
}

/// An entry's value for people: its text, `(deleted)`, `(value truncated)` or `-> KEY` for a
/// reference, then its expiry time when it has one.
pub fn value_text(e: &wire::Entry) -> String {
    let m = e.metadata.unwrap_or_default();
    let mut s = if e.deleted {
        "(deleted)".to_string()
    } else if e.value_truncated {
        "(value truncated)".to_string()
    } else if m.reference {
        match chainlog::integrity::kv::parse_reference(&e.value) {
            Some((target, 0)) => format!("-> {}", text(target)),
            Some((target, at)) => format!("-> {} as of tx {at}", text(target)),
            None => text(&e.value),
        }
    } else {
        text(&e.value)
    };
    if m.expires_at != 0 {
        s.push_str(&format!(
            "\t(expires {})",
            rfc3339_ms(m.expires_at.saturating_mul(1000))
        ));
    }
    s
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC (`2026-12-06T19:43:41.123Z`).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm), days since 1970-01-01.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

/// Microseconds since the Unix epoch as RFC 3339 UTC, to the microsecond.
pub fn rfc3339_us(us: u64) -> String {
    let ms = rfc3339_ms(us / 1000);
    format!("{}{:03}Z", ms.trim_end_matches('Z'), us % 1000)
}
