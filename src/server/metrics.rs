//! The metrics listener: Prometheus metrics at `/metrics`, liveness at `/healthz`, readiness
//! at `/readyz` (docs/operations.md lists every metric).
//!
//! Metrics are kept and encoded by `prometheus-client`: the gRPC requests by a tower layer
//! around the services (`RequestLayer`), everything about a database read from it at
//! scrape time (`DatabaseCollector`), so a database created, dropped or replaced never
//! leaves a stale series. `/metrics` answers in OpenMetrics text when the scraper asks for it
//! (`Accept: application/openmetrics-text`), in Prometheus text 0.0.4 otherwise.

use super::catalog::Catalog;
use super::{ServerError, ServerState};
use crate::ledger::stats::HistogramSnapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Upper bounds of the request-duration buckets, in seconds. A stream (Follow, ExportTx)
/// counts from its request to its end, so long ones land in `+Inf`.
const REQUEST_SECONDS_BOUNDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The gRPC path, `/package.Service/Method`; `unknown` for one no service has.
    method: String,
    /// The gRPC status code, as `OK`, `NOT_FOUND`, …
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_SECONDS_BOUNDS)
}

/// The server's metrics: a registry with the request metrics, the build, and the databases.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<MethodLabels>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new(catalog: Arc<Catalog>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily<MethodLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register(
            "chainlog_grpc_requests",
            "gRPC requests handled, by method and status code.",
            requests.clone(),
        );
        registry.register(
            "chainlog_grpc_request_duration_seconds",
            "Time from a gRPC request to the end of its response, by method",
            durations.clone(),
        );
        registry.register(
            "chainlog_build",
            "The running build: its version, on-disk format and replication protocol",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("format", crate::integrity::FORMAT_VERSION.to_string()),
                (
                    "protocol",
                    format!(
                        "{}.{}",
                        crate::wire::PROTOCOL_MAJOR,
                        crate::wire::PROTOCOL_MINOR
                    ),
                ),
            ]),
        );
        registry.register_collector(Box::new(DatabaseCollector { catalog }));
        Metrics {
            registry,
            requests,
            durations,
        }
    }

    fn record(&self, method: &str, code: Option<i32>, elapsed: std::time::Duration) {
        let code = code.map_or("CANCELLED", code_name);
        // A path no service has would add a series per made-up name.
        let method = if code == "UNIMPLEMENTED" {
            "unknown".to_string()
        } else {
            method.to_string()
        };
        self.requests
            .get_or_create(&RequestLabels {
                method: method.clone(),
                code,
            })
            .inc();
        self.durations
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition: OpenMetrics text (`openmetrics`) or Prometheus text 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // Writing into a String fails only if a metric's own encoding does, which ours do not.
        if let Err(e) = encoded {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// The canonical name of a gRPC status code (the grpc-status header's number).
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Every database's figures, read at scrape time.
struct DatabaseCollector {
    catalog: Arc<Catalog>,
}

impl std::fmt::Debug for DatabaseCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseCollector").finish_non_exhaustive()
    }
}

/// One family's descriptor and its samples, one per database.
fn gauges<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(&str, V)],
) -> std::fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family =
        encoder.encode_descriptor(name, &format!("{help}."), None, MetricType::Gauge)?;
    for (db, v) in samples {
        ConstGauge::new(*v).encode(family.encode_family(&[("database", *db)])?)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(&str, u64)],
) -> std::fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family =
        encoder.encode_descriptor(name, &format!("{help}."), None, MetricType::Counter)?;
    for (db, v) in samples {
        ConstCounter::new(*v).encode(family.encode_family(&[("database", *db)])?)?;
    }
    Ok(())
}

fn histograms(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(&str, HistogramSnapshot)],
) -> std::fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family =
        encoder.encode_descriptor(name, &format!("{help}."), None, MetricType::Histogram)?;
    for (db, h) in samples {
        // The encoder takes each bucket's own count and accumulates them itself.
        let mut below = 0;
        let buckets: Vec<(f64, u64)> = h
            .buckets
            .iter()
            .map(|(le, cumulative)| {
                let own = cumulative - below;
                below = *cumulative;
                (*le, own)
            })
            .collect();
        family
            .encode_family(&[("database", *db)])?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum, h.count, &buckets, None,
            )?;
    }
    Ok(())
}

impl Collector for DatabaseCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let dbs = self.catalog.list();
        let unavailable = self.catalog.unavailable();
        let mut tx = Vec::new();
        let mut epoch = Vec::new();
        let mut fenced = Vec::new();
        let mut disk = Vec::new();
        let mut commits = Vec::new();
        let mut groups = Vec::new();
        let mut fsyncs = Vec::new();
        let mut connected = Vec::new();
        let mut cosignatures = Vec::new();
        let mut lag_txs = Vec::new();
        let mut lag_seconds = Vec::new();
        let mut diverged = Vec::new();
        let mut checkpoint = Vec::new();
        let mut reconnects = Vec::new();
        let mut failures = Vec::new();
        for db in &dbs {
            let d = db.name.as_str();
            let stats = db.ledger.write_stats();
            tx.push((d, db.ledger.state().tx_id));
            epoch.push((d, db.ledger.epoch()));
            fenced.push((d, u64::from(db.hub.fenced().is_some())));
            disk.push((d, db.ledger.disk_bytes()));
            commits.push((d, stats.txs()));
            groups.push((d, stats.group_txs()));
            fsyncs.push((d, stats.fsync_seconds()));
            connected.push((d, db.hub.followers().len() as u64));
            cosignatures.push((d, db.hub.cosignatures().len() as u64));
            if let Some(s) = db.hub.status() {
                lag_txs.push((d, s.lag_txs()));
                #[allow(clippy::cast_precision_loss)]
                lag_seconds.push((d, s.lag_ms() as f64 / 1000.0));
                diverged.push((
                    d,
                    u64::from(s.state == crate::replication::ReplicaState::Diverged),
                ));
                checkpoint.push((d, s.signed_checkpoint.map_or(0, |c| c.0)));
                reconnects.push((d, s.reconnects));
                failures.push((d, s.verification_failures));
            }
        }
        let e = &mut encoder;
        {
            let mut f = e.encode_descriptor(
                "chainlog_databases",
                "Databases held, by state: serving, or quarantined (listed but not served).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(dbs.len() as u64).encode(f.encode_family(&[("state", "serving")])?)?;
            ConstGauge::new(unavailable.len() as u64)
                .encode(f.encode_family(&[("state", "quarantined")])?)?;
        }
        if !unavailable.is_empty() {
            let names: Vec<(&str, u64)> =
                unavailable.iter().map(|u| (u.name.as_str(), 1)).collect();
            gauges(
                e,
                "chainlog_database_quarantined",
                "1 for a database listed but not served (its files failed to open or check; the log says why)",
                &names,
            )?;
        }
        gauges(
            e,
            "chainlog_database_tx_id",
            "Id of the last committed transaction",
            &tx,
        )?;
        gauges(
            e,
            "chainlog_database_epoch",
            "Epoch of the last committed transaction",
            &epoch,
        )?;
        gauges(
            e,
            "chainlog_database_fenced",
            "1 if this database was a primary that a newer epoch replaced (it refuses writes)",
            &fenced,
        )?;
        gauges(
            e,
            "chainlog_database_disk_bytes",
            "Bytes the database's files take on disk",
            &disk,
        )?;
        counters(
            e,
            "chainlog_database_commits",
            "Transactions committed (or applied from a primary) since the database was opened",
            &commits,
        )?;
        histograms(
            e,
            "chainlog_database_group_commit_txs",
            "Transactions written by each group commit",
            &groups,
        )?;
        histograms(
            e,
            "chainlog_database_fsync_duration_seconds",
            "Time each fsync of the log took on the write path",
            &fsyncs,
        )?;
        gauges(
            e,
            "chainlog_replicas_connected",
            "Replicas following this database",
            &connected,
        )?;
        gauges(
            e,
            "chainlog_cosignatures_held",
            "Replica keys whose cosignature of a state this primary holds",
            &cosignatures,
        )?;
        gauges(
            e,
            "chainlog_replica_lag_txs",
            "Transactions the primary has that this replica has not applied",
            &lag_txs,
        )?;
        gauges(
            e,
            "chainlog_replica_lag_seconds",
            "Commit-time distance from the primary's head",
            &lag_seconds,
        )?;
        gauges(
            e,
            "chainlog_replica_diverged",
            "1 if the replicator stopped on a divergence.",
            &diverged,
        )?;
        gauges(
            e,
            "chainlog_replica_signed_checkpoint_tx_id",
            "Tx of the primary's last signed checkpoint the replica verified",
            &checkpoint,
        )?;
        counters(
            e,
            "chainlog_replica_reconnects",
            "Connections to the primary lost and tried again since the replicator started",
            &reconnects,
        )?;
        counters(
            e,
            "chainlog_replica_verification_failures",
            "Times what the primary sent failed verification (a divergence, a forged or mismatched checkpoint)",
            &failures,
        )?;
        Ok(())
    }
}

/// Counts every gRPC request by method and status code, and times it.
#[derive(Debug, Clone)]
pub(crate) struct RequestLayer {
    pub metrics: Arc<Metrics>,
}

impl<S> tower_layer::Layer<S> for RequestLayer {
    type Service = RequestService<S>;
    fn layer(&self, inner: S) -> RequestService<S> {
        RequestService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RequestService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// One request being answered: recorded once, when its response ends or is dropped (a
/// response dropped before its status, the client gone, counts as `CANCELLED`).
struct Outcome {
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
    code: Option<i32>,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        tracing::debug!(method = %self.method, code = self.code.map_or("CANCELLED", code_name), elapsed_us = elapsed.as_micros() as u64, "request");
        self.metrics.record(&self.method, self.code, elapsed);
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A response body that records its request's outcome when it ends.
pub(crate) struct MeteredBody<B> {
    inner: B,
    outcome: Option<Outcome>,
}

impl<B: http_body::Body + Unpin> http_body::Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    if let Some(o) = self.outcome.as_mut() {
                        o.code = Some(code);
                    }
                    self.outcome = None;
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(o) = self.outcome.as_mut() {
                    o.code.get_or_insert(13);
                }
                self.outcome = None;
            }
            Poll::Ready(None) => self.outcome = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for RequestService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body + Unpin,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let mut outcome = Outcome {
            metrics: self.metrics.clone(),
            method: req.uri().path().to_string(),
            started: Instant::now(),
            code: None,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // A trailers-only response (most errors) carries its status in the headers.
            let outcome = match grpc_status(resp.headers()) {
                Some(code) => {
                    outcome.code = Some(code);
                    drop(outcome);
                    None
                }
                None => Some(outcome),
            };
            Ok(resp.map(|inner| MeteredBody { inner, outcome }))
        })
    }
}

/// What `/readyz` answers.
fn readiness(state: &ServerState) -> (http::StatusCode, String) {
    let ready = state.ready.load(std::sync::atomic::Ordering::Acquire);
    let stopping = *state.stopping.borrow();
    let unavailable: Vec<String> = state
        .catalog
        .unavailable()
        .into_iter()
        .map(|u| u.name)
        .collect();
    let reason = if stopping {
        Some("shutting down")
    } else if !ready {
        Some("starting: the gRPC endpoint is not accepting requests yet")
    } else {
        None
    };
    let body = serde_json::json!({
        "ready": reason.is_none(),
        "reason": reason,
        "databases": state.catalog.list().len(),
        "quarantined": unavailable,
    });
    let code = if reason.is_none() {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{body}\n"))
}

/// Serves the metrics listener on `listener` until `shutdown` resolves: `GET /metrics`
/// (Prometheus), `/healthz` (200 while the process answers) and `/readyz` (200 while the
/// gRPC endpoint accepts requests, 503 before and once it shuts down; JSON either way).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics_state = state.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move |headers: http::HeaderMap| {
                let state = metrics_state.clone();
                async move {
                    let openmetrics = headers
                        .get_all(http::header::ACCEPT)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .any(|v| v.contains("application/openmetrics-text"));
                    let content_type = if openmetrics {
                        "application/openmetrics-text; version=1.0.0; charset=utf-8"
                    } else {
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
                    };
                    (
                        [(http::header::CONTENT_TYPE, content_type)],
                        state.metrics.encode(openmetrics),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    let (code, body) = readiness(&state);
                    (
                        code,
                        [(http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
