//! Values in chunks (StreamSet, StreamGet and their verified forms): a write is received into
//! the tx the ledger will store (`ledger::StreamedEntry`), a read goes out a chunk at a time
//! from the segment (`ledger::ValueSource`), checked against the value's hash as it goes. The
//! caller's permission is checked again before the commit and before every chunk read.

use super::Service;
use crate::integrity::TxId;
use crate::ledger::{check_value_len, LedgerError, StreamedEntry, ValueSource};
use crate::server::auth::Permission;
use crate::server::catalog::Database;
use crate::server::status::{self, blocking};
use crate::wire::{self, Reason, CHUNK_BYTES_MAX};
use std::sync::Arc;
use tonic::{Request, Status, Streaming};

/// A StreamGet answer in flight.
pub(super) type ChunkStream =
    tokio_stream::wrappers::ReceiverStream<Result<wire::StreamGetResponse, Status>>;

/// How many chunks may wait for a slow reader.
const CHUNKS_QUEUED: usize = 2;

impl Service {
    /// Receives a StreamSet stream and commits its value as one tx; returns the database and
    /// the tx's header, and the header message for the verified form's fields.
    pub(super) async fn receive_streamed(
        &self,
        mut req: Request<Streaming<wire::StreamSetRequest>>,
    ) -> Result<
        (
            Arc<Database>,
            crate::integrity::TxHeader,
            wire::StreamSetHeader,
        ),
        Status,
    > {
        let first =
            req.get_mut().message().await?.ok_or_else(|| {
                Status::invalid_argument("an empty stream: send the header first")
            })?;
        let header = first
            .header
            .ok_or_else(|| Status::invalid_argument("the first message carries the header"))?;
        let db = self.writable(&req, &header.database)?;
        let len = check_value_len(header.value_len).map_err(status::ledger)?;
        let meta = wire::new_entry_meta(false, header.metadata.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut entry =
            StreamedEntry::new(header.key.clone(), meta, len).map_err(status::ledger)?;
        if !first.chunk.is_empty() {
            return Err(Status::invalid_argument(
                "the header's message carries no chunk",
            ));
        }
        while let Some(m) = req.get_mut().message().await? {
            if m.header.is_some() {
                return Err(Status::invalid_argument("a second header"));
            }
            if m.chunk.len() > CHUNK_BYTES_MAX {
                return Err(Status::invalid_argument(format!(
                    "a chunk of {} bytes: at most {CHUNK_BYTES_MAX}",
                    m.chunk.len()
                )));
            }
            entry.push(&m.chunk).map_err(status::ledger)?;
        }
        // The caller may have lost the right to write while the value came in.
        let db2 = self.writable(&req, &header.database)?;
        if !Arc::ptr_eq(&db, &db2) {
            return Err(status::ledger(LedgerError::Closed));
        }
        let h = db
            .ledger
            .commit_streamed(entry)
            .await
            .map_err(status::ledger)?;
        Ok((db, h, header))
    }

    /// StreamGet: the entry, then the value in chunks.
    pub(super) async fn send_streamed(
        &self,
        req: Request<wire::GetRequest>,
    ) -> Result<ChunkStream, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let user = self.caller(&req)?;
        let r = req.into_inner();
        let at = if r.at_tx == 0 { TxId::MAX } else { r.at_tx };
        let d = db.clone();
        let key = r.key.clone();
        let src = blocking(move || d.ledger.value_source(&key, at, true))
            .await?
            .ok_or_else(|| Reason::KeyNotFound.status("key not found"))?;
        let first = wire::StreamGetResponse {
            entry: Some(wire::Entry {
                key: r.key,
                tx: src.tx(),
                metadata: wire::metadata_wire(src.meta()),
                value_hash: src.value_hash().0.to_vec(),
                value_streamed: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(self.chunks(first, src, user, r.database))
    }

    /// VerifiableStreamGet: VerifiableGet's proof, then the value in chunks (none when the
    /// proof shows no value to send).
    pub(super) async fn send_streamed_verified(
        &self,
        req: Request<wire::VerifiableGetRequest>,
    ) -> Result<ChunkStream, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let user = self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let d = db.clone();
        let (ve, src) = blocking(move || {
            let ve = this.verifiable_entry(&d, &r.key, r.at_tx, r.trusted_tx_id, true)?;
            let src = match &ve.entry {
                Some(e) if e.value_streamed => {
                    let at = ve.at.as_ref().map_or(TxId::MAX, |h| h.id);
                    let src = d.ledger.value_source(&r.key, at, false)?;
                    if src.as_ref().map(ValueSource::tx) != Some(e.tx) {
                        return Err(LedgerError::KeyNotFound);
                    }
                    src
                }
                _ => None,
            };
            Ok((ve, src))
        })
        .await?;
        let first = wire::StreamGetResponse {
            verifiable: Some(ve),
            ..Default::default()
        };
        match src {
            Some(src) => Ok(self.chunks(first, src, user, db.name.clone())),
            None => {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let _ = tx.try_send(Ok(first));
                Ok(ChunkStream::new(rx))
            }
        }
    }

    /// Sends `first`, then the value of `src` a chunk at a time from a blocking thread,
    /// checking the caller may still read before each chunk and the value's hash at the end.
    fn chunks(
        &self,
        first: wire::StreamGetResponse,
        src: ValueSource,
        user: String,
        database: String,
    ) -> ChunkStream {
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_QUEUED);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            if tx.blocking_send(Ok(first)).is_err() {
                return;
            }
            let mut hasher = ValueSource::hasher();
            let mut offset = 0u64;
            while offset < src.len() {
                if let Err(s) = this.database_for(&user, &database, Permission::Read) {
                    let _ = tx.blocking_send(Err(s));
                    return;
                }
                let chunk = match src.read(offset, CHUNK_BYTES_MAX) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(status::ledger(e)));
                        return;
                    }
                };
                hasher.update(&chunk);
                offset += chunk.len() as u64;
                let msg = wire::StreamGetResponse {
                    chunk,
                    ..Default::default()
                };
                if tx.blocking_send(Ok(msg)).is_err() {
                    return;
                }
            }
            if crate::integrity::Digest::from(hasher.finalize()) != src.value_hash() {
                tracing::error!(database = %database, tx = src.tx(), "a streamed value fails its hash");
                let _ = tx.blocking_send(Err(Status::data_loss(format!(
                    "the value written by tx {} fails its stored hash: the database is damaged",
                    src.tx()
                ))));
            }
        });
        ChunkStream::new(rx)
    }
}
