//! References and sorted sets: `reference`, `zadd` (each with `--verify`) and `zscan`.

use crate::input;
use crate::out::{entry_json, header_json, hex, put_bytes, text, value_text, Out};
use crate::session::Session;
use crate::Failure;
use chainlog::wire;
use serde_json::json;

/// SetReference: KEY refers to TARGET (bound to its version as of `at_tx`, 0: unbound).
pub async fn reference(
    session: &Session,
    out: &Out,
    key: &str,
    target: &str,
    at_tx: u64,
    verify: bool,
) -> Result<(), Failure> {
    let (key, target) = (input::key(key)?, input::key(target)?);
    if verify {
        let h = session
            .verified()
            .await?
            .set_reference(&session.db, &key, &target, at_tx)
            .await?;
        out.print(json!({"tx_id": h.id, "verified": true}), || {
            format!("tx {} (verified)", h.id)
        });
    } else {
        let h = session
            .connect()
            .await?
            .set_reference(&session.db, &key, &target, at_tx)
            .await?;
        out.print(header_json(&h), || format!("tx {}", h.id));
    }
    Ok(())
}

/// ZAdd: KEY joins SET with SCORE (bound to its version as of `at_tx`, 0: unbound).
pub async fn zadd(
    session: &Session,
    out: &Out,
    set: &str,
    score: f64,
    key: &str,
    at_tx: u64,
    verify: bool,
) -> Result<(), Failure> {
    let (set, key) = (input::key(set)?, input::key(key)?);
    if verify {
        let h = session
            .verified()
            .await?
            .zadd(&session.db, &set, score, &key, at_tx)
            .await?;
        out.print(json!({"tx_id": h.id, "verified": true}), || {
            format!("tx {} (verified)", h.id)
        });
    } else {
        let h = session
            .connect()
            .await?
            .zadd(&session.db, &set, score, &key, at_tx)
            .await?;
        out.print(header_json(&h), || format!("tx {}", h.id));
    }
    Ok(())
}

/// ZScan, one page: members in score order, each with its key's value.
pub async fn zscan(
    session: &Session,
    out: &Out,
    set: &str,
    range: (Option<f64>, Option<f64>),
    page: (u32, bool, u64),
    after: Option<&str>,
) -> Result<(), Failure> {
    let (limit, desc, at_tx) = page;
    let after = match after {
        Some(h) => chainlog::integrity::hex::decode(h)
            .ok_or_else(|| Failure::Error(format!("--after {h:?}: give a cursor as printed")))?,
        None => Vec::new(),
    };
    let r = session
        .connect()
        .await?
        .zscan(wire::ZScanRequest {
            database: session.db.clone(),
            set: input::key(set)?,
            min_score: range.0,
            max_score: range.1,
            limit,
            desc,
            at_tx,
            after,
        })
        .await?;
    let rows: Vec<serde_json::Value> = r
        .entries
        .iter()
        .map(|z| {
            let mut o = serde_json::Map::new();
            put_bytes(&mut o, "set", &z.set);
            put_bytes(&mut o, "key", &z.key);
            o.insert("score".into(), json!(z.score));
            o.insert("bound_tx_id".into(), json!(z.at_tx));
            o.insert("tx_id".into(), json!(z.tx));
            o.insert("cursor".into(), json!(hex(&z.cursor)));
            o.insert(
                "entry".into(),
                z.entry.as_ref().map_or(serde_json::Value::Null, entry_json),
            );
            serde_json::Value::Object(o)
        })
        .collect();
    out.print(json!({"at_tx_id": r.at_tx, "entries": rows}), || {
        let mut lines = vec![format!("as of tx {}", r.at_tx)];
        for z in &r.entries {
            let v = match &z.entry {
                Some(e) => value_text(e),
                None => "(no live value)".to_string(),
            };
            lines.push(format!(
                "{}\t{}\t{v}\t(added by tx {})",
                z.score,
                text(&z.key),
                z.tx
            ));
        }
        if let Some(last) = r.entries.last() {
            lines.push(format!("next page: --after {}", hex(&last.cursor)));
        }
        lines.join("\n")
    });
    Ok(())
}
