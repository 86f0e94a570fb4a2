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

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn hex(b: &[u8]) -> String {
    chainlog::integrity::hex::encode(b)
}

pub fn header_json(h: &wire::TxHeader) -> serde_json::Value {
    json!({"id": h.id, "timestamp_us": h.timestamp_us, "entry_count": h.entry_count,
           "prev_alh": hex(&h.prev_alh), "entries_root": hex(&h.entries_root),
           "history_size": h.history_size, "history_root": hex(&h.history_root)})
}

pub fn entry_json(e: &wire::Entry) -> serde_json::Value {
    json!({"key": text(&e.key), "value": text(&e.value), "tx": e.tx, "deleted": e.deleted})
}
