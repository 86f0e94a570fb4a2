//! Reads, writes and verified calls on --db.

use crate::input;
use crate::out::{entry_json, header_json, put_bytes, rfc3339_ms, text, value_text, Out};
use crate::session::Session;
use crate::Failure;
use chainlog::client::{Put, VerifiedRead};
use chainlog::integrity::EntryMeta;
use chainlog::wire;
use serde_json::json;

pub async fn set(
    session: &Session,
    out: &Out,
    pairs: &[String],
    must_exist: &[String],
    must_not_exist: &[String],
    not_modified_after: &[String],
    meta: EntryMeta,
) -> Result<(), Failure> {
    if !pairs.len().is_multiple_of(2) {
        return Err(Failure::Error(format!(
            "set takes KEY VALUE pairs: {} arguments given",
            pairs.len()
        )));
    }
    let puts: Vec<Put> = pairs
        .chunks(2)
        .map(|p| {
            Ok(Put {
                key: input::key(&p[0])?,
                value: input::value(&p[1])?,
                meta,
            })
        })
        .collect::<Result<_, Failure>>()?;
    let mut conditions = Vec::new();
    use wire::precondition::Precondition as P;
    for k in must_exist {
        conditions.push(P::KeyMustExist(input::key(k)?));
    }
    for k in must_not_exist {
        conditions.push(P::KeyMustNotExist(input::key(k)?));
    }
    for c in not_modified_after {
        let (k, tx) = c
            .rsplit_once('=')
            .and_then(|(k, t)| Some((k, t.parse::<u64>().ok()?)))
            .ok_or_else(|| Failure::Error(format!("--not-modified-after {c:?}: give KEY=TX")))?;
        conditions.push(P::KeyNotModifiedAfterTx(wire::KeyNotModifiedAfterTx {
            key: input::key(k)?,
            tx_id: tx,
        }));
    }
    let client = session.connect().await?;
    let h = if conditions.is_empty() {
        client.set_entries(&session.db, puts).await?
    } else {
        let ops = puts
            .into_iter()
            .map(|p| wire::Op {
                op: Some(wire::op::Op::Kv(p.into_wire())),
            })
            .collect();
        let pre = conditions
            .into_iter()
            .map(|p| wire::Precondition {
                precondition: Some(p),
            })
            .collect();
        client.exec_all(&session.db, ops, pre).await?
    };
    out.print(header_json(&h), || format!("tx {}", h.id));
    Ok(())
}

pub async fn get_all(
    session: &Session,
    out: &Out,
    keys: &[String],
    at_tx: u64,
) -> Result<(), Failure> {
    let r = session
        .connect()
        .await?
        .get_all(
            &session.db,
            keys.iter()
                .map(|k| input::key(k))
                .collect::<Result<_, _>>()?,
            at_tx,
        )
        .await?;
    out.print(
        json!({"at_tx_id": r.at_tx, "entries": r.entries.iter().map(entry_json).collect::<Vec<_>>()}),
        || {
            let mut lines = vec![format!("as of tx {}", r.at_tx)];
            for e in &r.entries {
                let v = value_text(e);
                lines.push(format!("{}\t{v}\t(tx {})", text(&e.key), e.tx));
            }
            lines.join("\n")
        },
    );
    Ok(())
}

/// `get-all --verify`: each key's latest value or proven absence.
pub async fn vget_all(session: &Session, out: &Out, keys: &[String]) -> Result<(), Failure> {
    let raw: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| input::key(k))
        .collect::<Result<_, _>>()?;
    let reads = session.verified().await?.get_all(&session.db, &raw).await?;
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    for (k, r) in raw.iter().zip(reads) {
        rows.push(read_json(k, &r));
        let (r, via) = through_reference(&r);
        let k = &k[..];
        lines.push(match r {
            VerifiedRead::Value(e) => format!(
                "{}\t{}\t(tx {}, verified{via})",
                text(k),
                text(&e.value),
                e.tx
            ),
            VerifiedRead::Reference { .. } => format!("{}\ta reference to a reference", text(k)),
            VerifiedRead::Truncated { tx, .. } => {
                format!("{}\t(value truncated)\t(tx {tx}, verified)", text(k))
            }
            VerifiedRead::Deleted { tx, .. } => {
                format!("{}\tnot found (proven): deleted by tx {tx}", text(k))
            }
            VerifiedRead::Expired { tx, expires_at, .. } => format!(
                "{}\tnot found (proven): tx {tx}'s version expired at {}",
                text(k),
                rfc3339_ms(expires_at.saturating_mul(1000))
            ),
            VerifiedRead::Absent { .. } => format!("{}\tnot found (proven)", text(k)),
        });
    }
    out.print(json!(rows), || lines.join("\n"));
    Ok(())
}

pub async fn count(session: &Session, out: &Out, prefix: &str, at_tx: u64) -> Result<(), Failure> {
    let r = session
        .connect()
        .await?
        .count(&session.db, &input::key(prefix)?, at_tx)
        .await?;
    out.print(json!({"count": r.count, "at_tx_id": r.at_tx}), || {
        r.count.to_string()
    });
    Ok(())
}

pub async fn txs(
    session: &Session,
    out: &Out,
    from: u64,
    limit: u32,
    desc: bool,
) -> Result<(), Failure> {
    let txs = session
        .connect()
        .await?
        .tx_scan(wire::TxScanRequest {
            database: session.db.clone(),
            initial_tx: from,
            limit,
            desc,
        })
        .await?;
    out.print(
        json!(txs
            .iter()
            .map(|t| json!({"header": t.header.as_ref().map(header_json),
            "entries": t.entries.iter().map(entry_json).collect::<Vec<_>>()}))
            .collect::<Vec<_>>()),
        || {
            txs.iter()
                .map(|t| {
                    let h = t.header.clone().unwrap_or_default();
                    let keys: Vec<String> = t.entries.iter().map(|e| text(&e.key)).collect();
                    format!(
                        "tx {}\t{}\t{}",
                        h.id,
                        crate::out::rfc3339_us(h.timestamp_us),
                        keys.join(" ")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    Ok(())
}

pub async fn info(session: &Session, out: &Out) -> Result<(), Failure> {
    let i = session.connect().await?.server_info().await?;
    out.print(
        json!({"version": i.version, "format_version": i.format_version,
               "protocol": format!("{}.{}", i.protocol_major, i.protocol_minor),
               "started_at": crate::out::rfc3339_ms(i.started_at_ms), "uptime_ms": i.uptime_ms,
               "databases": i.databases, "unavailable_databases": i.unavailable_databases,
               "replicates": i.replicates, "public_key": i.public_key, "build": i.build}),
        || {
            let mut s = format!(
                "chainlog {} ({}), format {}, replication protocol {}.{}\nstarted {}, up {} s\n{} database(s){}",
                i.version,
                i.build,
                i.format_version,
                i.protocol_major,
                i.protocol_minor,
                crate::out::rfc3339_ms(i.started_at_ms),
                i.uptime_ms / 1000,
                i.databases,
                if i.unavailable_databases > 0 {
                    format!(", {} unavailable", i.unavailable_databases)
                } else {
                    String::new()
                }
            );
            if !i.replicates.is_empty() {
                s.push_str(&format!("\nreplicates {}", i.replicates));
            }
            if !i.public_key.is_empty() {
                s.push_str(&format!("\nsigns states with {}", i.public_key));
            }
            s
        },
    );
    Ok(())
}

pub async fn get(session: &Session, out: &Out, key: &str, at_tx: u64) -> Result<(), Failure> {
    let e = session
        .connect()
        .await?
        .get_with(wire::GetRequest {
            database: session.db.clone(),
            key: input::key(key)?,
            at_tx,
            ..Default::default()
        })
        .await?
        .ok_or_else(|| Failure::Error(format!("key {key:?} not found")))?;
    out.print(entry_json(&e), || {
        format!("{}\t(tx {})", value_text(&e), e.tx)
    });
    Ok(())
}

pub async fn delete(session: &Session, out: &Out, keys: &[String]) -> Result<(), Failure> {
    let h = session
        .connect()
        .await?
        .delete(
            &session.db,
            keys.iter()
                .map(|k| input::key(k))
                .collect::<Result<_, _>>()?,
        )
        .await?;
    out.print(header_json(&h), || format!("tx {}", h.id));
    Ok(())
}

pub async fn history(
    session: &Session,
    out: &Out,
    key: &str,
    offset: u64,
    limit: u32,
    desc: bool,
) -> Result<(), Failure> {
    let es = session
        .connect()
        .await?
        .history(wire::HistoryRequest {
            database: session.db.clone(),
            key: input::key(key)?,
            offset,
            limit,
            desc,
        })
        .await?;
    out.print(json!(es.iter().map(entry_json).collect::<Vec<_>>()), || {
        es.iter()
            .map(|e| format!("tx {}\t{}", e.tx, value_text(e)))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

pub async fn scan(
    session: &Session,
    out: &Out,
    prefix: &str,
    limit: u32,
    desc: bool,
    after: Option<&str>,
) -> Result<(), Failure> {
    let es = session
        .connect()
        .await?
        .scan(wire::ScanRequest {
            database: session.db.clone(),
            prefix: input::key(prefix)?,
            after: input::key(after.unwrap_or_default())?,
            limit,
            desc,
            at_tx: 0,
        })
        .await?;
    out.print(json!(es.iter().map(entry_json).collect::<Vec<_>>()), || {
        es.iter()
            .map(|e| format!("{}\t{}", text(&e.key), value_text(e)))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

pub async fn tx(session: &Session, out: &Out, id: u64) -> Result<(), Failure> {
    let tx = session.connect().await?.tx(&session.db, id).await?;
    let h = tx.header.clone().unwrap_or_default();
    out.print(
        json!({"header": header_json(&h), "entries": tx.entries.iter().map(entry_json).collect::<Vec<_>>()}),
        || {
            let mut s = format!(
                "tx {} at {}, {} entries",
                h.id,
                crate::out::rfc3339_us(h.timestamp_us),
                h.entry_count
            );
            for e in &tx.entries {
                s.push_str(&format!(
                    "\n{}\t{}",
                    text(&e.key),
                    value_text(e)
                ));
            }
            s
        },
    );
    Ok(())
}

pub async fn vset(
    session: &Session,
    out: &Out,
    key: &str,
    value: &str,
    meta: EntryMeta,
) -> Result<(), Failure> {
    let put = Put {
        key: input::key(key)?,
        value: input::value(value)?,
        meta,
    };
    let h = session
        .verified()
        .await?
        .set_entries(&session.db, vec![put])
        .await?;
    out.print(json!({"tx_id": h.id, "verified": true}), || {
        format!("tx {} (verified)", h.id)
    });
    Ok(())
}

/// A verified read: the value, or the proof that the key has none (printed, exit 1).
pub async fn vget(session: &Session, out: &Out, key: &str, at_tx: u64) -> Result<(), Failure> {
    let read = session
        .verified()
        .await?
        .get(&session.db, &input::key(key)?, at_tx)
        .await?;
    let k = input::key(key)?;
    let j = read_json(&k, &read);
    let (read, via) = through_reference(&read);
    let (text_line, found) = match read {
        VerifiedRead::Value(e) => (
            format!(
                "{}\t(tx {}, verified in state {}{via}{})",
                text(&e.value),
                e.tx,
                e.state_tx,
                e.expires_at.map_or(String::new(), |t| format!(
                    "; expires {}",
                    rfc3339_ms(t.saturating_mul(1000))
                ))
            ),
            true,
        ),
        VerifiedRead::Reference { .. } => ("a reference to a reference".to_string(), false),
        VerifiedRead::Deleted {
            tx,
            at_tx,
            state_tx,
        } => (
            format!("not found (proven): deleted by tx {tx}, as of tx {at_tx}, verified in state {state_tx}"),
            false,
        ),
        VerifiedRead::Truncated {
            tx,
            at_tx,
            state_tx,
        } => (
            format!("value truncated (proven): the latest version is tx {tx}'s, whose value was dropped; as of tx {at_tx}, verified in state {state_tx}"),
            false,
        ),
        VerifiedRead::Expired {
            tx,
            expires_at,
            at_tx,
            state_tx,
        } => (
            format!(
                "not found (proven): tx {tx}'s version expired at {}, as of tx {at_tx}, verified in state {state_tx}",
                rfc3339_ms(expires_at.saturating_mul(1000))
            ),
            false,
        ),
        VerifiedRead::Absent { at_tx, state_tx } => (
            format!("not found (proven): never written as of tx {at_tx}, verified in state {state_tx}"),
            false,
        ),
    };
    out.print(j, || text_line);
    if found {
        Ok(())
    } else {
        Err(Failure::NotFound)
    }
}

/// The read a reference led to, and words that say so (empty for a plain read).
fn through_reference(read: &VerifiedRead) -> (&VerifiedRead, String) {
    match read {
        VerifiedRead::Reference {
            key,
            tx,
            referenced_key,
            bound_tx,
            target: Some(t),
            ..
        } => {
            let bound = if *bound_tx == 0 {
                String::new()
            } else {
                format!(" bound to tx {bound_tx}")
            };
            (
                t,
                format!(
                    ", through reference {} -> {} (tx {tx}{bound}, verified)",
                    text(key),
                    text(referenced_key)
                ),
            )
        }
        _ => (read, String::new()),
    }
}

/// A verified read of `key` as JSON, the same for `vget` and `get-all --verify`; a
/// reference's is its target's, with `referenced_by`.
fn read_json(key: &[u8], read: &VerifiedRead) -> serde_json::Value {
    if let VerifiedRead::Reference {
        key: rkey,
        tx,
        referenced_key,
        bound_tx,
        target: Some(t),
        ..
    } = read
    {
        let mut j = read_json(referenced_key, t);
        let mut r = serde_json::Map::new();
        put_bytes(&mut r, "key", rkey);
        r.insert("tx_id".into(), json!(tx));
        r.insert("bound_tx_id".into(), json!(bound_tx));
        j["referenced_by"] = serde_json::Value::Object(r);
        return j;
    }
    let mut o = serde_json::Map::new();
    put_bytes(&mut o, "key", key);
    match read {
        VerifiedRead::Reference { .. } => {
            o.insert("found".into(), json!(false));
            o.insert("reference_to_reference".into(), json!(true));
        }
        VerifiedRead::Value(e) => {
            put_bytes(&mut o, "value", &e.value);
            o.insert("tx_id".into(), json!(e.tx));
            if let Some(t) = e.expires_at {
                o.insert("expires_at".into(), json!(t));
            }
            o.insert("state_tx_id".into(), json!(e.state_tx));
            o.insert("found".into(), json!(true));
        }
        VerifiedRead::Deleted {
            tx,
            at_tx,
            state_tx,
        } => {
            o.insert("found".into(), json!(false));
            o.insert("deleted_tx_id".into(), json!(tx));
            o.insert("at_tx_id".into(), json!(at_tx));
            o.insert("state_tx_id".into(), json!(state_tx));
        }
        VerifiedRead::Truncated {
            tx,
            at_tx,
            state_tx,
        } => {
            o.insert("found".into(), json!(true));
            o.insert("value_truncated".into(), json!(true));
            o.insert("tx_id".into(), json!(tx));
            o.insert("at_tx_id".into(), json!(at_tx));
            o.insert("state_tx_id".into(), json!(state_tx));
        }
        VerifiedRead::Expired {
            tx,
            expires_at,
            at_tx,
            state_tx,
        } => {
            o.insert("found".into(), json!(false));
            o.insert("expired".into(), json!(true));
            o.insert("tx_id".into(), json!(tx));
            o.insert("expires_at".into(), json!(expires_at));
            o.insert("at_tx_id".into(), json!(at_tx));
            o.insert("state_tx_id".into(), json!(state_tx));
        }
        VerifiedRead::Absent { at_tx, state_tx } => {
            o.insert("found".into(), json!(false));
            o.insert("at_tx_id".into(), json!(at_tx));
            o.insert("state_tx_id".into(), json!(state_tx));
        }
    }
    o.insert("verified".into(), json!(true));
    serde_json::Value::Object(o)
}

pub async fn vtx(session: &Session, out: &Out, id: u64) -> Result<(), Failure> {
    let (h, entries) = session.verified().await?.tx(&session.db, id).await?;
    out.print(
        json!({"tx_id": h.id, "entries": entries.iter().map(entry_json).collect::<Vec<_>>(), "verified": true}),
        || format!("tx {} with {} entries (verified)", h.id, entries.len()),
    );
    Ok(())
}

/// The newest state `k` of the witnesses cosigned.
pub async fn cosigned_state(
    session: &Session,
    out: &Out,
    k: usize,
    witness_keys: &[String],
) -> Result<(), Failure> {
    let mut witnesses = Vec::new();
    for w in witness_keys {
        let key = chainlog::integrity::Digest::from_hex(w)
            .and_then(|d| ed25519_dalek::VerifyingKey::from_bytes(&d.0).ok())
            .ok_or_else(|| {
                Failure::Error(format!(
                    "--witness-key {w}: not an Ed25519 public key (64 hex)"
                ))
            })?;
        witnesses.push(key);
    }
    let db = &session.db;
    let s = session
        .verified()
        .await?
        .cosigned_state(db, k, &witnesses)
        .await?;
    out.print(
        json!({"database": db, "tx_id": s.tx_id, "alh": s.alh, "cosigned_by": s.witnesses, "verified": true}),
        || format!("{db} tx {} alh {} (cosigned by {} of the witnesses)", s.tx_id, s.alh, s.witnesses.len()),
    );
    Ok(())
}

pub async fn state(session: &Session, out: &Out) -> Result<(), Failure> {
    let db = &session.db;
    let v = session.verified().await?;
    let s = v.state(db).await?;
    // The key the server signs with, to pin with --server-key (checked only when given).
    let key = v
        .client()
        .server_info()
        .await
        .map(|i| i.public_key)
        .unwrap_or_default();
    out.print(
        json!({"database": db, "uuid": s.uuid, "tx_id": s.tx_id, "alh": s.alh,
               "server_public_key": (!key.is_empty()).then_some(&key),
               "signature_required": session.server_key.is_some()}),
        || {
            let mut line = format!("{db} tx {} alh {}", s.tx_id, s.alh);
            if !key.is_empty() {
                line.push_str(&format!(
                    "\nthe server signs states with {key}{}",
                    if session.server_key.is_some() {
                        " (verified)"
                    } else {
                        "; pin it with --server-key to require signatures"
                    }
                ));
            }
            line
        },
    );
    Ok(())
}

/// `state forget`: drops trusted states from the state file.
pub async fn forget(session: &Session, out: &Out, db: Option<&str>) -> Result<(), Failure> {
    let gone = session.verified().await?.forget(db).await?;
    out.print(
        json!({"forgotten": gone.iter().map(|(slot, s)| json!({"database": slot, "uuid": s.uuid, "tx_id": s.tx_id, "alh": s.alh})).collect::<Vec<_>>()}),
        || {
            if gone.is_empty() {
                "no trusted state to forget".to_string()
            } else {
                gone.iter()
                    .map(|(slot, s)| format!("forgot {slot}: {s}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        },
    );
    Ok(())
}

/// `set KEY --value-file F` above the unary limit, and `vset KEY --value-file F`: the file
/// streamed (StreamSet, or VerifiableStreamSet when verified).
pub async fn set_from_file(
    session: &Session,
    out: &Out,
    key: &str,
    file: &std::path::Path,
    meta: EntryMeta,
    verified: bool,
) -> Result<(), Failure> {
    let f = std::fs::File::open(file)
        .map_err(|e| Failure::Error(format!("{}: {e}", file.display())))?;
    let len = f
        .metadata()
        .map_err(|e| Failure::Error(format!("{}: {e}", file.display())))?
        .len();
    let key = input::key(key)?;
    let reader = std::io::BufReader::with_capacity(1 << 20, f);
    if verified {
        let h = session
            .verified()
            .await?
            .stream_set(&session.db, &key, meta, reader, len)
            .await?;
        out.print(
            json!({"tx_id": h.id, "value_len": len, "verified": true}),
            || format!("tx {} ({len} bytes streamed, verified)", h.id),
        );
    } else {
        let h = session
            .connect()
            .await?
            .stream_set(&session.db, &key, meta, reader, len)
            .await?;
        let mut j = header_json(&h);
        j["value_len"] = json!(len);
        out.print(j, || format!("tx {} ({len} bytes streamed)", h.id));
    }
    Ok(())
}

/// A file written under a temporary name next to `path`, renamed over it only when whole
/// (and, for a verified read, verified).
struct PendingFile {
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl PendingFile {
    fn create(path: &std::path::Path) -> Result<PendingFile, Failure> {
        let name = path
            .file_name()
            .ok_or_else(|| Failure::Error(format!("{}: not a file name", path.display())))?;
        let tmp = path.with_file_name(format!(
            ".{}.{}.part",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| Failure::Error(format!("{}: {e}", tmp.display())))?
        };
        Ok(PendingFile {
            tmp,
            path: path.to_path_buf(),
            file: std::io::BufWriter::with_capacity(1 << 20, file),
        })
    }

    fn keep(self) -> Result<(), Failure> {
        let fail = |e: std::io::Error| Failure::Error(format!("{}: {e}", self.tmp.display()));
        let file = self.file.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&self.tmp, &self.path).map_err(fail)
    }

    fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// `get KEY --out FILE`: StreamGet into FILE.
pub async fn get_to_file(
    session: &Session,
    out: &Out,
    key: &str,
    at_tx: u64,
    file: &std::path::Path,
) -> Result<(), Failure> {
    let client = session.connect().await?;
    let mut pending = PendingFile::create(file)?;
    let got = client
        .stream_get(&session.db, &input::key(key)?, at_tx, &mut pending.file)
        .await;
    match got {
        Ok(Some(e)) => {
            pending.keep()?;
            let mut j = entry_json(&e);
            j["file"] = json!(file.display().to_string());
            out.print(j, || format!("{} (tx {})", file.display(), e.tx));
            Ok(())
        }
        Ok(None) => {
            pending.discard();
            Err(Failure::Error(format!("key {key:?} not found")))
        }
        Err(e) => {
            pending.discard();
            Err(e.into())
        }
    }
}

/// `vget KEY --out FILE`: VerifiableStreamGet into FILE, kept only when verified.
pub async fn vget_to_file(
    session: &Session,
    out: &Out,
    key: &str,
    at_tx: u64,
    file: &std::path::Path,
) -> Result<(), Failure> {
    let verified = session.verified().await?;
    let k = input::key(key)?;
    let mut pending = PendingFile::create(file)?;
    let read = match verified
        .stream_get(&session.db, &k, at_tx, &mut pending.file)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            pending.discard();
            return Err(e.into());
        }
    };
    let (target, via) = through_reference(&read);
    if let VerifiedRead::Value(e) = target {
        pending.keep()?;
        let mut j = read_json(&k, &read);
        j["file"] = json!(file.display().to_string());
        out.print(j, || {
            format!(
                "{}\t(tx {}, verified in state {}{via})",
                file.display(),
                e.tx,
                e.state_tx
            )
        });
        return Ok(());
    }
    pending.discard();
    out.print(read_json(&k, &read), || "not found (proven)".to_string());
    Err(Failure::NotFound)
}
