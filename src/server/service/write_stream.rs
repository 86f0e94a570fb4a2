//! WriteStream: many writes on one stream, each its own tx, pipelined. A reader task prepares
//! and queues each request's tx as it arrives (`Ledger::enqueue`), without waiting for the
//! ones before; a responder task awaits them in order and answers each. The channel between
//! them is the window: when it is full the reader stops reading, and HTTP/2 flow control
//! stops the client.

use super::{data, Service};
use crate::integrity::TxId;
use crate::ledger::Committing;
use crate::server::auth::Permission;
use crate::server::status;
use crate::wire::{self, Reason};
use tonic::{Request, Status, Streaming};

/// Most writes of one stream in flight (read, not yet answered).
pub(super) const WINDOW: usize = 1024;

/// A WriteStream answer in flight.
pub(super) type Answers =
    tokio_stream::wrappers::ReceiverStream<Result<wire::WriteResponse, Status>>;

/// A refused write, as its response says it.
fn refused(seq: u64, s: &Status) -> wire::WriteResponse {
    wire::WriteResponse {
        seq,
        code: s.code() as u32,
        message: s.message().to_string(),
        reason: Reason::of(s).map_or(String::new(), |r| r.as_str().to_string()),
        ..Default::default()
    }
}

impl Service {
    pub(super) async fn write_stream_answers(
        &self,
        req: Request<Streaming<wire::WriteRequest>>,
    ) -> Result<Answers, Status> {
        let user = self.caller(&req)?;
        let mut incoming = req.into_inner();
        let first = incoming.message().await?.ok_or_else(|| {
            Status::invalid_argument("an empty stream: the first request names the database")
        })?;
        let name = first.database.clone();
        let writable = {
            let this = self.clone();
            let (user, name) = (user.clone(), name.clone());
            move || {
                this.database_for(&user, &name, Permission::ReadWrite)?;
                this.state.catalog.writable(&name).map_err(status::catalog)
            }
        };
        let db = writable()?;
        if first.verify {
            super::data::learn_epoch(&db, first.known_epoch);
        }
        let (verify, mut last_state) = (first.verify, first.trusted_tx_id);
        let (queued_tx, mut queued) =
            tokio::sync::mpsc::channel::<(u64, Result<Committing, Status>)>(WINDOW);
        let (answers_tx, answers) = tokio::sync::mpsc::channel(64);
        // The reader: each request prepared and queued as it comes, the caller's right to
        // write checked again each time.
        tokio::spawn(async move {
            let mut next = Some(first);
            let mut seq = 0u64;
            loop {
                let m = match next.take() {
                    Some(m) => m,
                    None => match incoming.message().await {
                        Ok(Some(m)) => m,
                        _ => return,
                    },
                };
                let queued_one = writable().and_then(|db| {
                    let entries = data::puts(m.entries)?;
                    db.ledger.enqueue(entries).map_err(status::ledger)
                });
                if queued_tx.send((seq, queued_one)).await.is_err() {
                    return;
                }
                seq += 1;
            }
        });
        // The responder: outcomes in order, proven when asked.
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((seq, q)) = queued.recv().await {
                let answer = match q {
                    Err(s) => refused(seq, &s),
                    Ok(c) => match c.wait().await {
                        Err(e) => refused(seq, &status::ledger(e)),
                        Ok(h) => {
                            let mut a = wire::WriteResponse {
                                seq,
                                header: Some((&h).into()),
                                ..Default::default()
                            };
                            if verify {
                                let (t, d) = (this.clone(), db.clone());
                                let trusted: TxId = last_state;
                                match status::blocking(move || {
                                    t.verifiable_tx(&d, h.id, trusted, false)
                                })
                                .await
                                {
                                    Ok(vt) => {
                                        last_state =
                                            vt.state.as_ref().map_or(last_state, |s| s.tx_id);
                                        a.verifiable = Some(vt);
                                    }
                                    // Committed, but not proven: the header stays, the
                                    // code says why there is no proof.
                                    Err(s) => {
                                        let r = refused(seq, &s);
                                        (a.code, a.message, a.reason) =
                                            (r.code, r.message, r.reason);
                                    }
                                }
                            }
                            a
                        }
                    },
                };
                if answers_tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Answers::new(answers))
    }
}
