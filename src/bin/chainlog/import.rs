//! `chainlog import`: JSON lines or CSV loaded through a WriteStream, pipelined, each line (or
//! each --batch lines) its own tx; a refused write is reported with its line and the rest go
//! on.

use crate::out::Out;
use crate::session::Session;
use crate::Failure;
use chainlog::client::{PendingWrite, Put};
use chainlog::integrity::EntryMeta;
use serde_json::json;
use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

/// How the input file is written.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// One JSON object a line: `{"key": …, "value": …}` (or `key_hex`/`value_hex`, as
    /// `--json` output writes them), optionally `"expires_at"` (seconds since the Unix epoch)
    Jsonl,
    /// `key,value` a line, RFC 4180 quoting ("a ""quoted"", field"); no header line
    Csv,
}

/// One line's entry.
fn parse(line: &str, format: Format) -> Result<Put, String> {
    match format {
        Format::Jsonl => {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
            let bytes = |name: &str| -> Result<Option<Vec<u8>>, String> {
                if let Some(s) = v.get(name).and_then(|s| s.as_str()) {
                    return Ok(Some(s.as_bytes().to_vec()));
                }
                match v.get(format!("{name}_hex")).and_then(|s| s.as_str()) {
                    Some(h) => chainlog::integrity::hex::decode(h)
                        .map(Some)
                        .ok_or_else(|| format!("{name}_hex is not hex")),
                    None => Ok(None),
                }
            };
            let key = bytes("key")?.ok_or("no key (or key_hex)")?;
            let value = bytes("value")?.ok_or("no value (or value_hex)")?;
            let meta = EntryMeta {
                expires_at: v.get("expires_at").and_then(serde_json::Value::as_u64),
                ..EntryMeta::default()
            };
            Ok(Put { key, value, meta })
        }
        Format::Csv => {
            let fields = csv_fields(line)?;
            match <[String; 2]>::try_from(fields) {
                Ok([k, v]) => Ok(Put::new(k.into_bytes(), v.into_bytes())),
                Err(f) => Err(format!("{} fields, want 2 (key,value)", f.len())),
            }
        }
    }
}

/// The fields of one CSV line (RFC 4180: a field in double quotes may hold commas, and `""`
/// for a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut f = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        f.push('"');
                    }
                    Some('"') => break,
                    Some(c) => f.push(c),
                    None => return Err("an unterminated quoted field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(f);
                    return Ok(fields);
                }
                Some(',') => fields.push(f),
                Some(c) => return Err(format!("{c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(f);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => f.push(c),
                }
            }
            fields.push(f);
        }
    }
}

/// The lines one write came from, and its answer to come.
struct Sent {
    first_line: u64,
    entries: usize,
    answer: PendingWrite,
}

struct Tally {
    txs: u64,
    entries: u64,
    failed: u64,
    first_tx: u64,
    last_tx: u64,
}

impl Tally {
    async fn settle(&mut self, s: Sent, out: &Out) {
        let (line, entries) = (s.first_line, s.entries);
        let outcome = s.answer.header().await.map(|h| h.id);
        self.count(line, entries, outcome, out);
    }

    fn count(
        &mut self,
        line: u64,
        entries: usize,
        outcome: Result<u64, chainlog::client::ClientError>,
        out: &Out,
    ) {
        match outcome {
            Ok(id) => {
                self.txs += 1;
                self.entries += entries as u64;
                if self.first_tx == 0 {
                    self.first_tx = id;
                }
                self.last_tx = id;
            }
            Err(e) => {
                self.failed += 1;
                report(out, line, &e.to_string());
            }
        }
    }
}

/// Where the txs go: a WriteStream, its answers awaited as the window fills; or, with
/// --verify, chunks of txs written and verified with `VerifiedClient::write_all`.
enum Sink {
    Plain {
        stream: chainlog::client::WriteStream,
        in_flight: VecDeque<Sent>,
    },
    Verified {
        client: Box<chainlog::client::VerifiedClient>,
        db: String,
        chunk: Vec<(u64, Vec<Put>)>,
    },
}

/// Txs verified together, one WriteStream and one save of the trusted state each.
const VERIFIED_CHUNK: usize = 10_000;

impl Sink {
    async fn push(
        &mut self,
        line: u64,
        puts: Vec<Put>,
        tally: &mut Tally,
        out: &Out,
    ) -> Result<(), Failure> {
        match self {
            Sink::Plain { stream, in_flight } => {
                let entries = puts.len();
                let answer = stream.send(puts).await?;
                in_flight.push_back(Sent {
                    first_line: line,
                    entries,
                    answer,
                });
                while in_flight.len() >= IN_FLIGHT {
                    if let Some(s) = in_flight.pop_front() {
                        tally.settle(s, out).await;
                    }
                }
            }
            Sink::Verified { chunk, .. } => {
                chunk.push((line, puts));
                if chunk.len() >= VERIFIED_CHUNK {
                    self.flush(tally, out).await?;
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self, tally: &mut Tally, out: &Out) -> Result<(), Failure> {
        match self {
            Sink::Plain { in_flight, .. } => {
                while let Some(s) = in_flight.pop_front() {
                    tally.settle(s, out).await;
                }
            }
            Sink::Verified { client, db, chunk } => {
                let txs = std::mem::take(chunk);
                let lines: Vec<(u64, usize)> = txs.iter().map(|(l, p)| (*l, p.len())).collect();
                let written = client
                    .write_all(db, txs.into_iter().map(|(_, p)| p).collect())
                    .await?;
                for ((line, entries), w) in lines.into_iter().zip(written) {
                    tally.count(line, entries, w.map(|h| h.id), out);
                }
            }
        }
        Ok(())
    }
}

fn report(out: &Out, line: u64, error: &str) {
    if out.json {
        eprintln!("{}", json!({"line": line, "error": error}));
    } else {
        eprintln!("line {line}: {error}");
    }
}

/// Most writes in flight: the server's window.
const IN_FLIGHT: usize = 1024;

pub async fn run(
    session: &Session,
    out: &Out,
    file: &std::path::Path,
    format: Format,
    batch: usize,
    verify: bool,
) -> Result<(), Failure> {
    if batch == 0 || batch > chainlog::integrity::ENTRIES_PER_TX_MAX {
        return Err(Failure::Error(format!(
            "--batch {batch}: give 1 to {}",
            chainlog::integrity::ENTRIES_PER_TX_MAX
        )));
    }
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| Failure::Error(format!("{}: {e}", file.display())))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let mut sink = if verify {
        Sink::Verified {
            client: Box::new(session.verified().await?),
            db: session.db.clone(),
            chunk: Vec::new(),
        }
    } else {
        Sink::Plain {
            stream: session.connect().await?.write_stream(&session.db).await?,
            in_flight: VecDeque::new(),
        }
    };
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal() && !out.json;
    let mut last_shown = Instant::now();
    let mut tally = Tally {
        txs: 0,
        entries: 0,
        failed: 0,
        first_tx: 0,
        last_tx: 0,
    };
    let mut puts = Vec::with_capacity(batch);
    let mut first_line = 0;
    let mut lines = 0u64;
    let mut bad_lines = 0u64;
    for line in reader.lines() {
        let line = line.map_err(|e| Failure::Error(format!("{}: {e}", file.display())))?;
        lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        let put = match parse(&line, format) {
            Ok(p) => p,
            Err(e) => {
                bad_lines += 1;
                report(out, lines, &e);
                continue;
            }
        };
        if puts.is_empty() {
            first_line = lines;
        }
        puts.push(put);
        if puts.len() == batch {
            sink.push(first_line, std::mem::take(&mut puts), &mut tally, out)
                .await?;
        }
        if progress && last_shown.elapsed().as_millis() >= 200 {
            last_shown = Instant::now();
            let rate = tally.txs as f64 / started.elapsed().as_secs_f64();
            let mut e = std::io::stderr();
            let _ = write!(
                e,
                "\r\x1b[2Kimport: {lines} lines, {} txs ({rate:.0} tx/s)",
                tally.txs
            );
            let _ = e.flush();
        }
    }
    if !puts.is_empty() {
        sink.push(first_line, puts, &mut tally, out).await?;
    }
    sink.flush(&mut tally, out).await?;
    drop(sink);
    if progress {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
    let secs = started.elapsed().as_secs_f64();
    let failed = tally.failed + bad_lines;
    out.print(
        json!({"lines": lines, "txs": tally.txs, "entries": tally.entries, "failed": failed,
               "first_tx_id": tally.first_tx, "last_tx_id": tally.last_tx,
               "seconds": secs, "tx_per_sec": tally.txs as f64 / secs.max(1e-9)}),
        || {
            format!(
                "{} entries in {} txs (tx {}..{}) from {lines} lines in {secs:.2} s ({:.0} tx/s){}",
                tally.entries,
                tally.txs,
                tally.first_tx,
                tally.last_tx,
                tally.txs as f64 / secs.max(1e-9),
                if failed > 0 {
                    format!("; {failed} failed (listed above)")
                } else {
                    String::new()
                }
            )
        },
    );
    if failed > 0 {
        Err(Failure::Reported(1))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_follow_rfc_4180() {
        assert_eq!(csv_fields("a,b").unwrap(), ["a", "b"]);
        assert_eq!(
            csv_fields("\"a,1\",\"say \"\"hi\"\"\"").unwrap(),
            ["a,1", "say \"hi\""]
        );
        assert_eq!(csv_fields("a,").unwrap(), ["a", ""]);
        assert!(csv_fields("\"open").is_err());
        assert!(csv_fields("\"a\"x,b").is_err());
    }
}
