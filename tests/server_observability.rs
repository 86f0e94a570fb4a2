//! What a monitoring system sees: `/metrics` parsed by a real Prometheus and OpenMetrics
//! parser (no family of unknown type, a replica's series under their own families, seconds
//! not milliseconds), `/healthz` and `/readyz`, gRPC health per service, reflection v1 and
//! v1alpha, and gzip-compressed requests accepted.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cli, free_port, Server, ADMIN_PASSWORD};
use openmetrics_parser::{
    openmetrics::parse_openmetrics, prometheus::parse_prometheus, OpenMetricsType, PrometheusType,
    PrometheusValue,
};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// `GET path` on `port` with `accept`; returns (status code, body).
fn get(port: u16, path: &str, accept: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\naccept: {accept}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    // axum answers these with a content length, never chunked.
    (code, body.to_string())
}

fn sample_value(v: &PrometheusValue) -> f64 {
    match v {
        PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Histogram(h) => h.count.unwrap_or(0) as f64,
        PrometheusValue::Summary(s) => s.count.unwrap_or(0) as f64,
    }
}

/// The value of `family`'s sample whose labels are `labels`, from Prometheus text.
fn value(
    exp: &openmetrics_parser::MetricsExposition<PrometheusType, PrometheusValue>,
    family: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let f = exp.families.get(family)?;
    f.iter_samples()
        .find(|s| {
            let set = s.get_labelset().unwrap();
            labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .map(|s| sample_value(&s.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_cover_requests_commits_and_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let mport = free_port();
    let primary = Server::start(
        &dir.path().join("p"),
        &["--metrics-listen", &format!("127.0.0.1:{mport}")],
    );
    let rport = free_port();
    let replica = Server::start(
        &dir.path().join("r"),
        &["--metrics-listen", &format!("127.0.0.1:{rport}")],
    );
    let p = common::admin(&primary).await;
    for i in 0..20u32 {
        p.set(
            "defaultdb",
            vec![(format!("k{i}").into_bytes(), b"v".to_vec())],
        )
        .await
        .unwrap();
    }
    // A request that fails: a key that does not exist.
    assert_eq!(p.get("defaultdb", b"nothing").await.unwrap(), None);
    let port = primary.addr.rsplit(':').next().unwrap().to_string();
    let (code, out, err) = cli(
        &replica.addr,
        &dir.path().join("st.json"),
        &[
            "database",
            "create",
            "mirror",
            "--replication-is-replica",
            "--replication-primary-host",
            "127.0.0.1",
            "--replication-primary-port",
            &port,
            "--replication-primary-database",
            "defaultdb",
            "--replication-primary-username",
            "admin",
            "--replication-primary-password",
            ADMIN_PASSWORD,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let r = common::admin(&replica).await;
    let start = Instant::now();
    while r.current_state("mirror").await.unwrap().tx_id < 20 {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The primary, in Prometheus text 0.0.4: every family typed, the figures right.
    let (status, text) = get(mport, "/metrics", "text/plain");
    assert_eq!(status, 200, "{text}");
    let exp = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    for (name, f) in &exp.families {
        assert_ne!(f.family_type, PrometheusType::Unknown, "{name} untyped");
        assert!(!name.ends_with("_ms"), "{name}: Prometheus wants seconds");
    }
    let types = [
        ("chainlog_grpc_requests_total", PrometheusType::Counter),
        (
            "chainlog_grpc_request_duration_seconds",
            PrometheusType::Histogram,
        ),
        ("chainlog_build_info", PrometheusType::Gauge),
        ("chainlog_database_tx_id", PrometheusType::Gauge),
        ("chainlog_database_commits_total", PrometheusType::Counter),
        (
            "chainlog_database_group_commit_txs",
            PrometheusType::Histogram,
        ),
        (
            "chainlog_database_fsync_duration_seconds",
            PrometheusType::Histogram,
        ),
        ("chainlog_database_disk_bytes", PrometheusType::Gauge),
        ("chainlog_replicas_connected", PrometheusType::Gauge),
    ];
    for (name, t) in types {
        let f = exp
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no {name}:\n{text}"));
        assert_eq!(f.family_type, t, "{name}");
    }
    let set_ok = value(
        &exp,
        "chainlog_grpc_requests_total",
        &[("method", "/chainlog.v1.Data/Set"), ("code", "OK")],
    )
    .unwrap_or_else(|| panic!("{text}"));
    assert!(set_ok >= 20.0, "{set_ok}");
    let missing = value(
        &exp,
        "chainlog_grpc_requests_total",
        &[("method", "/chainlog.v1.Data/Get"), ("code", "NOT_FOUND")],
    );
    assert_eq!(missing, Some(1.0), "{text}");
    // defaultdb's 20 txs; the system database's own are counted under it.
    assert_eq!(
        value(
            &exp,
            "chainlog_database_tx_id",
            &[("database", "defaultdb")]
        ),
        Some(20.0)
    );
    assert!(
        value(
            &exp,
            "chainlog_database_commits_total",
            &[("database", "defaultdb")]
        )
        .unwrap()
            >= 20.0
    );
    let fsyncs = value(
        &exp,
        "chainlog_database_fsync_duration_seconds",
        &[("database", "defaultdb")],
    )
    .unwrap();
    assert!(fsyncs >= 1.0, "{fsyncs}");
    assert!(
        value(
            &exp,
            "chainlog_database_disk_bytes",
            &[("database", "defaultdb")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        value(
            &exp,
            "chainlog_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );
    let start = Instant::now();
    loop {
        let (_, text) = get(mport, "/metrics", "text/plain");
        let exp = parse_prometheus(&text).unwrap();
        if value(
            &exp,
            "chainlog_replicas_connected",
            &[("database", "defaultdb")],
        ) == Some(1.0)
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The replica server, in OpenMetrics: replica families are their own, in seconds.
    let (status, text) = get(rport, "/metrics", "application/openmetrics-text");
    assert_eq!(status, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");
    let om = parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    for (name, f) in &om.families {
        assert_ne!(f.family_type, OpenMetricsType::Unknown, "{name} untyped");
    }
    for (name, t) in [
        ("chainlog_replica_lag_txs", OpenMetricsType::Gauge),
        ("chainlog_replica_lag_seconds", OpenMetricsType::Gauge),
        ("chainlog_replica_reconnects", OpenMetricsType::Counter),
        (
            "chainlog_replica_verification_failures",
            OpenMetricsType::Counter,
        ),
        ("chainlog_replica_diverged", OpenMetricsType::Gauge),
    ] {
        let f = om
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no {name}:\n{text}"));
        assert_eq!(f.family_type, t, "{name}");
        assert!(
            f.iter_samples()
                .any(|s| s.get_labelset().unwrap().get_label_value("database") == Some("mirror")),
            "{name}: {text}"
        );
    }
    // The replica's samples stay under the replica families only.
    let exp = parse_prometheus(&get(rport, "/metrics", "*/*").1).unwrap();
    for (name, f) in &exp.families {
        if !name.starts_with("chainlog_replica_") {
            continue;
        }
        for s in f.iter_samples() {
            assert_eq!(
                s.get_labelset().unwrap().get_label_value("database"),
                Some("mirror"),
                "{name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_reflection_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let mport = free_port();
    let server = Server::start(
        &dir.path().join("d"),
        &["--metrics-listen", &format!("127.0.0.1:{mport}")],
    );
    assert_eq!(get(mport, "/healthz", "*/*"), (200, "ok\n".to_string()));
    // Ready once the gRPC endpoint serves, as a probe polls it.
    let start = Instant::now();
    let body = loop {
        let (code, body) = get(mport, "/readyz", "*/*");
        if code == 200 {
            break body;
        }
        assert_eq!(code, 503, "{body}");
        assert!(start.elapsed() < Duration::from_secs(10), "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true, "{body}");

    let channel = tonic::transport::Endpoint::from_shared(server.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Health per service, and an unknown service is NOT_FOUND.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "",
        "chainlog.v1.Auth",
        "chainlog.v1.Users",
        "chainlog.v1.Databases",
        "chainlog.v1.Data",
        "chainlog.v1.Replication",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service}: {e}"));
        assert_eq!(r.into_inner().status, 1, "{service}: SERVING");
    }
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "chainlog.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Reflection, both versions, lists the services and the health service.
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient as ClientV1alpha,
        server_reflection_request::MessageRequest as RequestV1alpha,
        server_reflection_response::MessageResponse as ResponseV1alpha,
        ServerReflectionRequest as ReqV1alpha,
    };
    let mut alpha = ClientV1alpha::new(channel.clone());
    let mut stream = alpha
        .server_reflection_info(tokio_stream::iter([ReqV1alpha {
            host: String::new(),
            message_request: Some(RequestV1alpha::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let Some(ResponseV1alpha::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "chainlog.v1.Data",
        "chainlog.v1.Replication",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "v1alpha: {names:?}");
    }
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request,
        server_reflection_response, ServerReflectionRequest,
    };
    let mut v1 = ServerReflectionClient::new(channel.clone());
    let mut stream = v1
        .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        }]))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let Some(server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("{answer:?}")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "grpc.health.v1.Health"),
        "v1: {list:?}"
    );

    // A gzip-compressed request is taken.
    let mut auth = chainlog::wire::auth_client::AuthClient::new(channel)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let login = auth
        .login(chainlog::wire::LoginRequest {
            user: "admin".into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap();
    assert!(!login.into_inner().token.is_empty());

    // Shutting down: readiness goes first.
    drop(server);
}
