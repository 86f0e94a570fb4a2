//! Many writes on one stream (WriteStream): a sink of txs, each answered by a future of its
//! header, committed in the order sent without a round trip each.

use super::{Client, ClientError, Put, Result};
use crate::wire::{self, REASON_KEY};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

type Waiting = Arc<Mutex<VecDeque<tokio::sync::oneshot::Sender<Result<wire::WriteResponse>>>>>;

/// An open WriteStream ([`Client::write_stream`]).
pub struct WriteStream {
    requests: tokio::sync::mpsc::Sender<wire::WriteRequest>,
    waiting: Waiting,
    first: Option<wire::WriteRequest>,
}

/// One write sent on a [`WriteStream`], its answer to come.
pub struct PendingWrite(tokio::sync::oneshot::Receiver<Result<wire::WriteResponse>>);

impl PendingWrite {
    /// The whole answer: the header, or the code and reason that refused the write (and,
    /// on a verified stream, the proof).
    pub async fn response(self) -> Result<wire::WriteResponse> {
        self.0
            .await
            .unwrap_or_else(|_| Err(ClientError::Status(Status::unavailable("the stream ended"))))
    }

    /// The tx's header, or the refusal as a status (its reason as a status carries one).
    pub async fn header(self) -> Result<wire::TxHeader> {
        let r = self.response().await?;
        match r.header {
            Some(h) if r.code == 0 => Ok(h),
            _ => Err(ClientError::Status(refusal(&r))),
        }
    }
}

/// A refused write's status.
pub fn refusal(r: &wire::WriteResponse) -> Status {
    let code = i32::try_from(r.code).map_or(Code::Unknown, Code::from);
    let mut s = Status::new(code, r.message.clone());
    if let Ok(v) = r.reason.parse() {
        if !r.reason.is_empty() {
            s.metadata_mut().insert(REASON_KEY, v);
        }
    }
    s
}

impl WriteStream {
    /// Sends the entries of one tx, without waiting for the txs before it to commit; at most
    /// 1024 are in flight (the server's window), past which this waits. The answer comes on
    /// the returned [`PendingWrite`], in the order sent.
    pub async fn send(&mut self, entries: Vec<Put>) -> Result<PendingWrite> {
        let mut req = self.first.take().unwrap_or_default();
        req.entries = entries.into_iter().map(Put::into_wire).collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(tx);
        self.requests
            .send(req)
            .await
            .map_err(|_| ClientError::Status(Status::unavailable("the stream ended")))?;
        Ok(PendingWrite(rx))
    }
}

impl Client {
    /// Opens a WriteStream on `db`: writes sent on it are pipelined, each its own tx.
    pub async fn write_stream(&self, db: &str) -> Result<WriteStream> {
        self.open_write_stream(wire::WriteRequest {
            database: db.to_string(),
            ..Default::default()
        })
        .await
    }

    /// [`Client::write_stream`] with the first request as given (`verify` and the trusted
    /// state set by `VerifiedClient::write_all`).
    pub(crate) async fn open_write_stream(&self, first: wire::WriteRequest) -> Result<WriteStream> {
        let (requests, rx) = tokio::sync::mpsc::channel(64);
        let waiting: Waiting = Arc::default();
        let mut data = self.data();
        let w = waiting.clone();
        // The call starts when the first request is sent; its answers go to the waiters in
        // order. A stream that fails fails every write still waiting.
        tokio::spawn(async move {
            let fail = |w: &Waiting, s: Status| {
                for t in w
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .drain(..)
                {
                    let _ = t.send(Err(ClientError::Status(s.clone())));
                }
            };
            let mut answers = match data.write_stream(ReceiverStream::new(rx)).await {
                Ok(a) => a.into_inner(),
                Err(s) => return fail(&w, s),
            };
            loop {
                match answers.message().await {
                    Ok(Some(r)) => {
                        let t = w
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .pop_front();
                        if let Some(t) = t {
                            let _ = t.send(Ok(r));
                        }
                    }
                    Ok(None) => return fail(&w, Status::unavailable("the stream ended")),
                    Err(s) => return fail(&w, s),
                }
            }
        });
        Ok(WriteStream {
            requests,
            waiting,
            first: Some(first),
        })
    }
}
