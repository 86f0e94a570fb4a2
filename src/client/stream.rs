//! Values in chunks: StreamSet from any reader, StreamGet into any writer, never holding a
//! whole value (the verified forms are in `verified`).

use super::{Client, ClientError, Result};
use crate::integrity::{self, Digest, EntryMeta};
use crate::wire::{self, CHUNK_BYTES_MAX};
use std::io::{Read, Write};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// The request stream of a StreamSet: the header, then `len` bytes of `value` in chunks, read
/// on a blocking thread. The value's hash (as its entry digest takes it) is sent on the
/// returned channel once all of it was read; an error reading it ends the stream early (the
/// server then refuses the short value) and is given there instead.
pub(crate) fn chunks(
    header: wire::StreamSetHeader,
    mut value: impl Read + Send + 'static,
) -> (
    ReceiverStream<wire::StreamSetRequest>,
    tokio::sync::oneshot::Receiver<std::io::Result<Digest>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let len = header.value_len;
    tokio::task::spawn_blocking(move || {
        let first = wire::StreamSetRequest {
            header: Some(header),
            chunk: Vec::new(),
        };
        if tx.blocking_send(first).is_err() {
            return;
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[integrity::TAG_VALUE]);
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(CHUNK_BYTES_MAX as u64)).unwrap_or(CHUNK_BYTES_MAX);
            let mut chunk = vec![0u8; n];
            if let Err(e) = value.read_exact(&mut chunk) {
                let _ = done_tx.send(Err(e));
                return;
            }
            hasher.update(&chunk);
            left -= n as u64;
            if tx
                .blocking_send(wire::StreamSetRequest {
                    header: None,
                    chunk,
                })
                .is_err()
            {
                return;
            }
        }
        let _ = done_tx.send(Ok(hasher.finalize().into()));
    });
    (ReceiverStream::new(rx), done_rx)
}

/// The header of a StreamSet.
pub(crate) fn header(db: &str, key: &[u8], meta: EntryMeta, len: u64) -> wire::StreamSetHeader {
    wire::StreamSetHeader {
        database: db.to_string(),
        key: key.to_vec(),
        value_len: len,
        metadata: wire::metadata_wire(meta),
        trusted_tx_id: 0,
        known_epoch: 0,
    }
}

/// Where reading the value failed, if it did (after the call ended).
pub(crate) async fn value_read(
    done: tokio::sync::oneshot::Receiver<std::io::Result<Digest>>,
) -> Result<Option<Digest>> {
    match done.await {
        Ok(Ok(d)) => Ok(Some(d)),
        Ok(Err(e)) => Err(ClientError::Io(format!("reading the value: {e}"))),
        Err(_) => Ok(None),
    }
}

impl Client {
    /// Writes `len` bytes read from `value` as the value of `key` in one tx (StreamSet), a
    /// chunk at a time: for values above the 32 MiB a unary call carries, up to 256 MiB.
    pub async fn stream_set(
        &self,
        db: &str,
        key: &[u8],
        meta: EntryMeta,
        value: impl Read + Send + 'static,
        len: u64,
    ) -> Result<wire::TxHeader> {
        let (stream, done) = chunks(header(db, key, meta, len), value);
        let answer = self.data().stream_set(stream).await;
        value_read(done).await?;
        Ok(answer?.into_inner())
    }

    /// Reads the live value of `key` (as of `at_tx`, 0: the latest) into `out` a chunk at a
    /// time (StreamGet), checking it against the hash the server sent first; returns the
    /// entry (its value empty), or `None` if the key has no live value. Unverified: see
    /// `VerifiedClient::stream_get`.
    pub async fn stream_get(
        &self,
        db: &str,
        key: &[u8],
        at_tx: u64,
        out: &mut (impl Write + Send),
    ) -> Result<Option<wire::Entry>> {
        let answer = self
            .data()
            .stream_get(wire::GetRequest {
                database: db.to_string(),
                key: key.to_vec(),
                at_tx,
                ..Default::default()
            })
            .await;
        let mut stream = match answer {
            Ok(s) => s.into_inner(),
            Err(s) if super::is_key_not_found(&s) => return Ok(None),
            Err(s) => return Err(s.into()),
        };
        let first = stream
            .message()
            .await?
            .and_then(|m| m.entry)
            .ok_or(wire::WireError {
                field: "entry",
                reason: "missing",
            })?;
        let expected = wire::streamed_value_hash(&first)?;
        let got = copy_chunks(&mut stream, out).await?;
        if got != expected {
            return Err(wire::WireError {
                field: "chunk",
                reason: "the value does not match the hash the server sent first",
            }
            .into());
        }
        Ok(Some(first))
    }
}

/// Writes the chunks of a StreamGet answer to `out`; returns their hash as an entry digest
/// takes it.
pub(crate) async fn copy_chunks(
    stream: &mut tonic::Streaming<wire::StreamGetResponse>,
    out: &mut (impl Write + Send),
) -> Result<Digest> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[integrity::TAG_VALUE]);
    while let Some(m) = stream.message().await? {
        hasher.update(&m.chunk);
        out.write_all(&m.chunk)
            .map_err(|e| ClientError::Io(format!("writing the value: {e}")))?;
    }
    Ok(hasher.finalize().into())
}
