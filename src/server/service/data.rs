//! `Data`: reads, writes and verified calls.

use super::{kv, stream, write_stream, Service};
use crate::integrity::{TxId, VALUE_UNARY_BYTES_MAX};
use crate::ledger::{LedgerError, NewEntry, Order, Precondition};
use crate::server::auth::Permission;
use crate::server::catalog::Database;
use crate::server::convert::{entry_wire, tx_wire};
use crate::server::status::{self, blocking, offload};
use crate::wire::{self, data_server, Reason, PAGE_LIMIT_MAX};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest a Get may wait for a tx.
pub const WAIT_MS_MAX: u64 = 60_000;

fn limit_of(limit: u32) -> usize {
    (if limit == 0 {
        PAGE_LIMIT_MAX
    } else {
        limit.min(PAGE_LIMIT_MAX)
    }) as usize
}

fn order_of(desc: bool) -> Order {
    if desc {
        Order::Desc
    } else {
        Order::Asc
    }
}

/// Entries up to this size are kept for one retry of a commit that met a closed or failed
/// ledger (a settings update reopening it, writes failing until space was freed).
const RETRY_BYTES_MAX: usize = 1 << 20;

impl Service {
    /// Commits `entries` on database `name` (got as `db`), then waits for its replicas if it is
    /// synchronous. A ledger found closed (a settings update reopened it meanwhile) or failed
    /// (writes failing, say for a full disk, that succeed again) is taken again from the
    /// catalog and the commit tried once more: nothing was written by the attempt that failed.
    async fn commit(
        &self,
        db: Arc<Database>,
        entries: Vec<NewEntry>,
    ) -> Result<(Arc<Database>, crate::integrity::TxHeader), Status> {
        self.commit_if(db, entries, Vec::new()).await
    }

    /// Commits the one entry `make` builds from the database (a reference, a sorted-set
    /// member), with the condition it puts on the key it names.
    async fn write_one(
        &self,
        db: Arc<Database>,
        make: impl FnOnce(&crate::ledger::Ledger) -> Result<(NewEntry, Option<Precondition>), Status>
            + Send
            + 'static,
    ) -> Result<(Arc<Database>, crate::integrity::TxHeader), Status> {
        let d = db.clone();
        let (entry, condition) = offload(move || make(&d.ledger), |s: Status| s).await?;
        self.commit_if(db, vec![entry], condition.into_iter().collect())
            .await
    }

    /// [`Service::write_one`], answered as VerifiableSet is: the tx proven in the current
    /// state, extending the caller's trusted state (`(known_epoch, trusted_tx_id)`).
    async fn write_one_verified<T>(
        &self,
        req: &Request<T>,
        name: &str,
        (known, trusted): (u64, TxId),
        make: impl FnOnce(&crate::ledger::Ledger) -> Result<(NewEntry, Option<Precondition>), Status>
            + Send
            + 'static,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        if let Ok(db) = self.database(req, name, Permission::ReadWrite) {
            learn_epoch(&db, known);
        }
        let db = self.writable(req, name)?;
        let (db, h) = self.write_one(db, make).await?;
        let this = self.clone();
        let v = blocking(move || this.verifiable_tx(&db, h.id, trusted, false)).await?;
        Ok(Response::new(v))
    }

    /// [`Service::commit`] with preconditions, checked by the writer in commit order.
    async fn commit_if(
        &self,
        mut db: Arc<Database>,
        entries: Vec<NewEntry>,
        conditions: Vec<Precondition>,
    ) -> Result<(Arc<Database>, crate::integrity::TxHeader), Status> {
        let bytes: usize = entries.iter().map(|e| e.key.len() + e.value.len()).sum();
        if db.ledger.poisoned() {
            db = self.recovered(&db.name).await.unwrap_or(db);
        }
        let again = (bytes <= RETRY_BYTES_MAX).then(|| entries.clone());
        let first = if conditions.is_empty() {
            db.ledger.commit_async(entries).await
        } else {
            db.ledger.commit_if_async(entries, conditions.clone()).await
        };
        let h = match first {
            Ok(h) => h,
            Err(e @ (LedgerError::Closed | LedgerError::Poisoned { .. })) => {
                let (Some(entries), Some(fresh)) = (again, self.recovered(&db.name).await) else {
                    return Err(status::ledger(e));
                };
                if Arc::ptr_eq(&fresh, &db) {
                    return Err(status::ledger(e));
                }
                db = fresh;
                db.ledger
                    .commit_if_async(entries, conditions)
                    .await
                    .map_err(status::ledger)?
            }
            Err(e) => return Err(status::ledger(e)),
        };
        db.replicated(h.id, self.state.stopping.subscribe())
            .await
            .map_err(status::replication)?;
        Ok((db, h))
    }

    /// The writable database `name` as the catalog has it now, reopened first if its writes
    /// failed and succeed again.
    async fn recovered(&self, name: &str) -> Option<Arc<Database>> {
        let (state, name) = (self.state.clone(), name.to_string());
        tokio::task::spawn_blocking(move || state.catalog.recover_writes(&name))
            .await
            .ok()
            .flatten()
    }
}

/// A verified client knows of epoch `known` for `db`: above this database's, this primary was
/// replaced, and fences itself (writes are refused from now on).
pub(super) fn learn_epoch(db: &Database, known: u64) {
    let epoch = db.ledger.epoch();
    if known > epoch
        && !db.settings.replication.is_replica()
        && db.hub.fence_in(Some(db.ledger.dir()), known, "")
    {
        tracing::error!(database = %db.name, epoch, newer = known, "a verified client knows a newer epoch: this primary was replaced, and refuses writes from now on");
    }
}

/// An ExecAll operation that names another key: its entry and condition are made once the
/// request is decoded.
enum Named {
    Reference(wire::ReferenceRequest),
    ZAdd(wire::ZAddRequest),
}

pub(super) fn puts(entries: Vec<wire::KeyValue>) -> Result<Vec<NewEntry>, Status> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, kv)| put(i, kv))
        .collect()
}

/// A value a unary answer may carry; a larger one is read with StreamGet.
fn unary_value(e: Option<&wire::Entry>) -> Result<(), Status> {
    match e {
        Some(e) if e.value.len() > VALUE_UNARY_BYTES_MAX => Err(Status::out_of_range(format!(
            "the value of {:?} is {} bytes, more than a unary answer carries ({VALUE_UNARY_BYTES_MAX}): read it with StreamGet (chainlog get --out FILE)",
            String::from_utf8_lossy(&e.key),
            e.value.len()
        ))),
        _ => Ok(()),
    }
}

/// Entry `index` of a write, with its metadata.
fn put(index: usize, kv: wire::KeyValue) -> Result<NewEntry, Status> {
    if kv.value.len() > VALUE_UNARY_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "entry {index}: a value of {} bytes, more than a unary call carries ({VALUE_UNARY_BYTES_MAX}): write it with StreamSet (chainlog set KEY --value-file FILE)",
            kv.value.len()
        )));
    }
    let meta = wire::new_entry_meta(false, kv.metadata.as_ref())
        .map_err(|e| Status::invalid_argument(format!("entry {index}: {e}")))?;
    Ok(NewEntry {
        key: kv.key,
        value: kv.value,
        meta,
    })
}

#[tonic::async_trait]
impl data_server::Data for Service {
    async fn set(
        &self,
        req: Request<wire::SetRequest>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        let db = self.writable(&req, &req.get_ref().database)?;
        let entries = puts(req.into_inner().entries)?;
        let (_, h) = self.commit(db, entries).await?;
        Ok(Response::new((&h).into()))
    }

    async fn get(&self, req: Request<wire::GetRequest>) -> Result<Response<wire::Entry>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let kv = blocking(move || {
            if r.since_tx > 0
                && !db.ledger.wait_for(
                    r.since_tx,
                    Duration::from_millis(r.wait_ms.min(WAIT_MS_MAX)),
                )
            {
                return Err(LedgerError::TxNotFound {
                    id: r.since_tx,
                    last: db.ledger.state().tx_id,
                });
            }
            let at = if r.at_tx == 0 { TxId::MAX } else { r.at_tx };
            match db.ledger.get_at(&r.key, at)? {
                Some(kv) => kv::resolve(&db.ledger, kv, at),
                None => Ok(None),
            }
        })
        .await?;
        let e = kv.ok_or_else(|| Reason::KeyNotFound.status("key not found"))?;
        unary_value(Some(&e))?;
        Ok(Response::new(e))
    }

    async fn delete(
        &self,
        req: Request<wire::DeleteRequest>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        let db = self.writable(&req, &req.get_ref().database)?;
        let keys = req.into_inner().keys;
        let d = db.clone();
        // Each key must be valid and live (a tx of deletes of absent keys is refused).
        let entries = blocking(move || d.ledger.deletes(&keys)).await?;
        let (_, h) = self.commit(db, entries).await?;
        Ok(Response::new((&h).into()))
    }

    async fn history(
        &self,
        req: Request<wire::HistoryRequest>,
    ) -> Result<Response<wire::HistoryResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let key = r.key.clone();
        let versions = blocking(move || {
            db.ledger
                .history(&r.key, r.offset, limit_of(r.limit), order_of(r.desc))
        })
        .await?;
        let entries = versions
            .into_iter()
            .map(|v| wire::Entry {
                key: key.clone(),
                value: v.value,
                tx: v.tx,
                deleted: v.deleted,
                value_truncated: v.value_truncated,
                value_hash: Vec::new(),
                metadata: wire::metadata_wire(v.meta),
                referenced_by: None,
                value_streamed: false,
            })
            .collect();
        Ok(Response::new(wire::HistoryResponse { entries }))
    }

    async fn scan(
        &self,
        req: Request<wire::ScanRequest>,
    ) -> Result<Response<wire::ScanResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let found = blocking(move || {
            let after = if r.after.is_empty() {
                None
            } else {
                Some(r.after.as_slice())
            };
            let at = if r.at_tx == 0 { TxId::MAX } else { r.at_tx };
            db.ledger
                .scan(&r.prefix, after, limit_of(r.limit), order_of(r.desc), at)
        })
        .await?;
        Ok(Response::new(wire::ScanResponse {
            entries: found.into_iter().map(entry_wire).collect(),
        }))
    }

    async fn tx_by_id(
        &self,
        req: Request<wire::TxByIdRequest>,
    ) -> Result<Response<wire::Tx>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let id = req.get_ref().id;
        let tx = blocking(move || db.ledger.tx(id)).await?;
        Ok(Response::new(tx_wire(tx)))
    }

    async fn exec_all(
        &self,
        req: Request<wire::ExecAllRequest>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        let db = self.writable(&req, &req.get_ref().database)?;
        let r = req.into_inner();
        let mut entries = Vec::with_capacity(r.operations.len());
        let mut deletes = Vec::new();
        let mut named = Vec::new();
        for (i, op) in r.operations.into_iter().enumerate() {
            match op.op {
                Some(wire::op::Op::Kv(kv)) => entries.push(put(i, kv)?),
                Some(wire::op::Op::DeleteKey(k)) => deletes.push(k),
                Some(wire::op::Op::Ref(r)) => named.push(Named::Reference(r)),
                Some(wire::op::Op::Zadd(z)) => named.push(Named::ZAdd(z)),
                None => {
                    return Err(Status::invalid_argument(format!(
                        "operation {i} is empty: set kv or delete_key"
                    )))
                }
            }
        }
        let mut conditions = Vec::with_capacity(r.preconditions.len());
        for (i, p) in r.preconditions.into_iter().enumerate() {
            use wire::precondition::Precondition as P;
            conditions.push(match p.precondition {
                Some(P::KeyMustExist(k)) => Precondition::MustExist(k),
                Some(P::KeyMustNotExist(k)) => Precondition::MustNotExist(k),
                Some(P::KeyNotModifiedAfterTx(c)) => Precondition::NotModifiedAfter {
                    key: c.key,
                    tx: c.tx_id,
                },
                None => {
                    return Err(Status::invalid_argument(format!(
                        "precondition {i} is empty"
                    )))
                }
            });
        }
        if !deletes.is_empty() {
            let d = db.clone();
            entries.extend(blocking(move || d.ledger.deletes(&deletes)).await?);
        }
        if !named.is_empty() {
            let d = db.clone();
            let made = offload(
                move || {
                    named
                        .iter()
                        .map(|n| match n {
                            Named::Reference(r) => kv::reference(&d.ledger, r),
                            Named::ZAdd(z) => kv::zadd(&d.ledger, z),
                        })
                        .collect::<Result<Vec<_>, Status>>()
                },
                |s: Status| s,
            )
            .await?;
            for (entry, condition) in made {
                entries.push(entry);
                conditions.extend(condition);
            }
        }
        let (_, h) = self.commit_if(db, entries, conditions).await?;
        Ok(Response::new((&h).into()))
    }

    async fn get_all(
        &self,
        req: Request<wire::GetAllRequest>,
    ) -> Result<Response<wire::GetAllResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        if r.keys.len() > PAGE_LIMIT_MAX as usize {
            return Err(Status::invalid_argument(format!(
                "{} keys: at most {PAGE_LIMIT_MAX} in one GetAll",
                r.keys.len()
            )));
        }
        let (entries, at) = blocking(move || {
            let at = if r.at_tx == 0 {
                db.ledger.state().tx_id
            } else {
                r.at_tx
            };
            let mut out = Vec::with_capacity(r.keys.len());
            for key in &r.keys {
                match db.ledger.get_at(key, at).and_then(|kv| match kv {
                    Some(kv) => kv::resolve(&db.ledger, kv, at),
                    None => Ok(None),
                }) {
                    Ok(Some(e)) => out.push(e),
                    Ok(None) => {}
                    Err(LedgerError::ValueTruncated { tx, .. }) => out.push(wire::Entry {
                        key: key.clone(),
                        tx,
                        value_truncated: true,
                        ..Default::default()
                    }),
                    Err(e) => return Err(e),
                }
            }
            Ok((out, at))
        })
        .await?;
        for e in &entries {
            unary_value(Some(e))?;
        }
        Ok(Response::new(wire::GetAllResponse { entries, at_tx: at }))
    }

    async fn tx_scan(
        &self,
        req: Request<wire::TxScanRequest>,
    ) -> Result<Response<wire::TxScanResponse>, Status> {
        /// Values in one answer, at most (the first tx always goes).
        const SCAN_BYTES_MAX: usize = 16 << 20;
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let limit = if r.limit == 0 { 100 } else { limit_of(r.limit) } as u64;
        let txs = blocking(move || {
            let last = db.ledger.state().tx_id;
            let ids: Box<dyn Iterator<Item = TxId>> = if r.desc {
                let from = if r.initial_tx == 0 {
                    last
                } else {
                    r.initial_tx.min(last)
                };
                Box::new(
                    (1..=from)
                        .rev()
                        .take(usize::try_from(limit).unwrap_or(usize::MAX)),
                )
            } else {
                let from = r.initial_tx.max(1);
                Box::new((from..=last).take(usize::try_from(limit).unwrap_or(usize::MAX)))
            };
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for id in ids {
                let tx = db.ledger.tx(id)?;
                bytes += tx
                    .entries
                    .iter()
                    .map(|e| e.key.len() + e.value.len())
                    .sum::<usize>();
                if !out.is_empty() && bytes > SCAN_BYTES_MAX {
                    break;
                }
                out.push(tx_wire(tx));
            }
            Ok(out)
        })
        .await?;
        Ok(Response::new(wire::TxScanResponse { txs }))
    }

    async fn count(
        &self,
        req: Request<wire::CountRequest>,
    ) -> Result<Response<wire::CountResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let (count, at) = blocking(move || {
            let at = if r.at_tx == 0 {
                db.ledger.state().tx_id
            } else {
                r.at_tx
            };
            Ok((db.ledger.count(&r.prefix, at)?, at))
        })
        .await?;
        Ok(Response::new(wire::CountResponse { count, at_tx: at }))
    }

    type WriteStreamStream = write_stream::Answers;

    async fn write_stream(
        &self,
        req: Request<tonic::Streaming<wire::WriteRequest>>,
    ) -> Result<Response<Self::WriteStreamStream>, Status> {
        Ok(Response::new(self.write_stream_answers(req).await?))
    }

    async fn stream_set(
        &self,
        req: Request<tonic::Streaming<wire::StreamSetRequest>>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        let (_, h, _) = self.receive_streamed(req).await?;
        Ok(Response::new((&h).into()))
    }

    type StreamGetStream = stream::ChunkStream;

    async fn stream_get(
        &self,
        req: Request<wire::GetRequest>,
    ) -> Result<Response<Self::StreamGetStream>, Status> {
        Ok(Response::new(self.send_streamed(req).await?))
    }

    async fn verifiable_stream_set(
        &self,
        req: Request<tonic::Streaming<wire::StreamSetRequest>>,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        let (db, h, header) = self.receive_streamed(req).await?;
        learn_epoch(&db, header.known_epoch);
        let this = self.clone();
        let v =
            blocking(move || this.verifiable_tx(&db, h.id, header.trusted_tx_id, false)).await?;
        Ok(Response::new(v))
    }

    type VerifiableStreamGetStream = stream::ChunkStream;

    async fn verifiable_stream_get(
        &self,
        req: Request<wire::VerifiableGetRequest>,
    ) -> Result<Response<Self::VerifiableStreamGetStream>, Status> {
        if let Ok(db) = self.database(&req, &req.get_ref().database, Permission::Read) {
            learn_epoch(&db, req.get_ref().known_epoch);
        }
        Ok(Response::new(self.send_streamed_verified(req).await?))
    }

    async fn set_reference(
        &self,
        req: Request<wire::ReferenceRequest>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        let db = self.writable(&req, &req.get_ref().database)?;
        let r = req.into_inner();
        let (_, h) = self.write_one(db, move |l| kv::reference(l, &r)).await?;
        Ok(Response::new((&h).into()))
    }

    async fn z_add(
        &self,
        req: Request<wire::ZAddRequest>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        let db = self.writable(&req, &req.get_ref().database)?;
        let r = req.into_inner();
        let (_, h) = self.write_one(db, move |l| kv::zadd(l, &r)).await?;
        Ok(Response::new((&h).into()))
    }

    async fn z_scan(
        &self,
        req: Request<wire::ZScanRequest>,
    ) -> Result<Response<wire::ZScanResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let answer = offload(move || kv::zscan(&db.ledger, &r), |s: Status| s).await?;
        Ok(Response::new(answer))
    }

    async fn verifiable_set_reference(
        &self,
        req: Request<wire::VerifiableReferenceRequest>,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        let r = req.get_ref();
        let inner = wire::required("request", &r.request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .clone();
        let (db, known, trusted) = (inner.database.clone(), r.known_epoch, r.trusted_tx_id);
        self.write_one_verified(&req, &db, (known, trusted), move |l| {
            kv::reference(l, &inner)
        })
        .await
    }

    async fn verifiable_z_add(
        &self,
        req: Request<wire::VerifiableZAddRequest>,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        let r = req.get_ref();
        let inner = wire::required("request", &r.request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .clone();
        let (db, known, trusted) = (inner.database.clone(), r.known_epoch, r.trusted_tx_id);
        self.write_one_verified(&req, &db, (known, trusted), move |l| kv::zadd(l, &inner))
            .await
    }

    async fn verifiable_set(
        &self,
        req: Request<wire::VerifiableSetRequest>,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        if let Ok(db) = self.database(&req, &req.get_ref().database, Permission::ReadWrite) {
            learn_epoch(&db, req.get_ref().known_epoch);
        }
        let db = self.writable(&req, &req.get_ref().database)?;
        let r = req.into_inner();
        let entries = puts(r.entries)?;
        let (db, h) = self.commit(db, entries).await?;
        let this = self.clone();
        let v = blocking(move || this.verifiable_tx(&db, h.id, r.trusted_tx_id, false)).await?;
        Ok(Response::new(v))
    }

    async fn verifiable_get(
        &self,
        req: Request<wire::VerifiableGetRequest>,
    ) -> Result<Response<wire::VerifiableEntry>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        learn_epoch(&db, req.get_ref().known_epoch);
        let r = req.into_inner();
        let this = self.clone();
        let v =
            blocking(move || this.verifiable_entry(&db, &r.key, r.at_tx, r.trusted_tx_id, false))
                .await?;
        unary_value(v.entry.as_ref())?;
        Ok(Response::new(v))
    }

    async fn verifiable_get_all(
        &self,
        req: Request<wire::VerifiableGetAllRequest>,
    ) -> Result<Response<wire::VerifiableGetAllResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        learn_epoch(&db, req.get_ref().known_epoch);
        let r = req.into_inner();
        if r.keys.len() > PAGE_LIMIT_MAX as usize {
            return Err(Status::invalid_argument(format!(
                "{} keys: at most {PAGE_LIMIT_MAX} in one VerifiableGetAll",
                r.keys.len()
            )));
        }
        let this = self.clone();
        let entries = blocking(move || {
            // One state for every key: the last tx when the call starts.
            let at = db.ledger.state().tx_id;
            r.keys
                .iter()
                .map(|k| this.verifiable_entry(&db, k, at, r.trusted_tx_id, false))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        for e in &entries {
            unary_value(e.entry.as_ref())?;
        }
        Ok(Response::new(wire::VerifiableGetAllResponse { entries }))
    }

    async fn verifiable_tx_by_id(
        &self,
        req: Request<wire::VerifiableTxByIdRequest>,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        learn_epoch(&db, req.get_ref().known_epoch);
        let r = req.into_inner();
        let this = self.clone();
        let v = blocking(move || this.verifiable_tx(&db, r.id, r.trusted_tx_id, true)).await?;
        Ok(Response::new(v))
    }

    async fn consistency_proof(
        &self,
        req: Request<wire::ConsistencyProofRequest>,
    ) -> Result<Response<wire::StateProof>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let p = blocking(move || db.ledger.state_proof(r.old_tx_id, r.new_tx_id)).await?;
        Ok(Response::new((&p).into()))
    }

    async fn current_state(
        &self,
        req: Request<wire::CurrentStateRequest>,
    ) -> Result<Response<wire::State>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let st = db.ledger.state();
        Ok(Response::new(self.state_wire(&db, st.tx_id, &st.alh)))
    }
}
