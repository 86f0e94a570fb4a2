//! Automatic failover on etcd (an existing consensus service, as Patroni does for PostgreSQL;
//! no election of chainlog's own). Every server of a cluster runs this coordinator for each
//! database under failover: the server that holds the database's leadership key in etcd,
//! bound to its lease, is the primary; the others follow it as replicas (docs/replication.md,
//! "Automatic failover").
//!
//! - Each server publishes its progress per database (last tx, epoch) under its lease.
//! - With no leader, after two rounds (so the progress of every live server has settled,
//!   since nothing commits without a primary), the most advanced server takes the key in a
//!   transaction that succeeds only if nobody holds it; it promotes its database with an
//!   epoch of at least the key's etcd revision, so epochs follow etcd's order.
//! - A leader renews its lease every third of the TTL and takes writes only until half the
//!   TTL after its last renewal: a leader that is cut off, frozen or slow stops accepting
//!   writes before its lease can expire and another server lead.
//! - A server whose database is primary while another leads (a former leader coming back)
//!   re-points it to follow the leader, discarding its unreplicated txs into evidence (the
//!   rejoin).

use super::catalog::{ReplicationSettings, Settings};
use super::ServerState;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod pb {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    tonic::include_proto!("etcdserverpb");
}

use pb::{kv_client::KvClient, lease_client::LeaseClient};

/// The failover coordinator's settings.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// etcd's client URLs (`http://host:port`); the first that answers is used.
    pub endpoints: Vec<String>,
    /// The cluster's name: its keys live under `/chainlog/<cluster>/`.
    pub cluster: String,
    /// The databases under failover.
    pub databases: Vec<String>,
    /// `host:port` at which the other servers reach this one.
    pub advertise: String,
    /// The leadership lease's time to live.
    pub lease_ttl: Duration,
    /// The user (and password) a replica logs in to the leader as.
    pub username: String,
    pub password: SecretString,
    /// Replicas that must hold a tx before the primary acknowledges it.
    pub sync_acks: u32,
}

/// How often the coordinator looks at etcd.
const TICK: Duration = Duration::from_millis(250);

struct Etcd {
    kv: KvClient<tonic::transport::Channel>,
    lease: LeaseClient<tonic::transport::Channel>,
}

impl Etcd {
    async fn connect(endpoints: &[String]) -> Result<Etcd, String> {
        let mut last = String::from("no endpoint");
        for e in endpoints {
            let ep = tonic::transport::Endpoint::from_shared(e.clone())
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(2));
            match ep.connect().await {
                Ok(ch) => {
                    return Ok(Etcd {
                        kv: KvClient::new(ch.clone()),
                        lease: LeaseClient::new(ch),
                    })
                }
                Err(err) => last = format!("{e}: {err}"),
            }
        }
        Err(last)
    }

    async fn grant(&mut self, ttl: Duration) -> Result<i64, String> {
        let r = self
            .lease
            .lease_grant(pb::LeaseGrantRequest {
                ttl: i64::try_from(ttl.as_secs().max(1)).unwrap_or(60),
                id: 0,
            })
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        if !r.error.is_empty() {
            return Err(r.error);
        }
        Ok(r.id)
    }

    /// Renews lease `id` once; false if etcd no longer has it (it expired).
    async fn renew(&mut self, id: i64) -> Result<bool, String> {
        let mut s = self
            .lease
            .lease_keep_alive(tokio_stream::iter([pb::LeaseKeepAliveRequest { id }]))
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        match s.message().await.map_err(|e| e.message().to_string())? {
            Some(r) => Ok(r.ttl > 0),
            None => Err("the keepalive stream ended".into()),
        }
    }

    async fn get(&mut self, key: &str) -> Result<Option<pb::KeyValue>, String> {
        let r = self
            .kv
            .range(pb::RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        Ok(r.kvs.into_iter().next())
    }

    async fn prefix(&mut self, prefix: &str) -> Result<Vec<pb::KeyValue>, String> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let r = self
            .kv
            .range(pb::RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: end,
                limit: 0,
            })
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        Ok(r.kvs)
    }

    async fn put(&mut self, key: &str, value: Vec<u8>, lease: i64) -> Result<(), String> {
        self.kv
            .put(pb::PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                lease,
            })
            .await
            .map_err(|e| e.message().to_string())?;
        Ok(())
    }

    /// Puts `key` only if nobody holds it; its create revision if this call did.
    async fn create(
        &mut self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Option<i64>, String> {
        let r = self
            .kv
            .txn(pb::TxnRequest {
                compare: vec![pb::Compare {
                    result: pb::compare::CompareResult::Equal as i32,
                    target: pb::compare::CompareTarget::Create as i32,
                    key: key.as_bytes().to_vec(),
                    target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
                }],
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: key.as_bytes().to_vec(),
                        value,
                        lease,
                    })),
                }],
                failure: Vec::new(),
            })
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        Ok(r.succeeded.then(|| r.header.map_or(0, |h| h.revision)))
    }
}

/// What one server publishes of one database: how far it is.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct Member {
    advertise: String,
    epoch: u64,
    tx_id: u64,
}

/// The leadership key's value.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct Leader {
    advertise: String,
}

/// One database's coordination state on this server.
#[derive(Default)]
struct Round {
    /// Consecutive rounds that found no leader.
    leaderless: u32,
    /// This server held the leadership at the last round that reached etcd.
    leading: bool,
}

/// Runs the coordinator until the server stops.
pub async fn run(state: Arc<ServerState>, config: HaConfig) {
    let mut stopping = state.stopping.subscribe();
    let mut etcd: Option<Etcd> = None;
    let mut lease: Option<i64> = None;
    let mut renewed = Instant::now() - config.lease_ttl;
    let mut rounds: std::collections::BTreeMap<String, Round> = Default::default();
    let mut last_error = String::new();
    loop {
        let outcome = async {
            if etcd.is_none() {
                etcd = Some(Etcd::connect(&config.endpoints).await?);
            }
            let Some(e) = etcd.as_mut() else {
                return Err("not connected".to_string());
            };
            // The lease: renewed every third of the TTL; a new one once etcd lost it.
            let due = renewed.elapsed() >= config.lease_ttl / 3;
            match lease {
                Some(id) if due => {
                    if e.renew(id).await? {
                        renewed = Instant::now();
                    } else {
                        lease = None;
                    }
                }
                _ => {}
            }
            if lease.is_none() {
                lease = Some(e.grant(config.lease_ttl).await?);
                renewed = Instant::now();
            }
            let lease_id = lease.unwrap_or_default();
            for db in &config.databases {
                let round = rounds.entry(db.clone()).or_default();
                step(&state, &config, e, lease_id, renewed, db, round).await?;
            }
            Ok::<(), String>(())
        }
        .await;
        if let Err(err) = outcome {
            for db in &config.databases {
                if let Ok(d) = state.catalog.get(db) {
                    d.hub
                        .set_coordinator_view(format!("etcd unreachable: {err}"));
                }
            }
            if err != last_error {
                tracing::warn!(error = %err, "failover coordinator: etcd failed; retrying");
                last_error = err;
            }
            etcd = None;
        } else {
            last_error.clear();
        }
        // Whatever happened, a leader takes writes only while its lease is surely held (half
        // its TTL after the last renewal that etcd confirmed), and a primary that does not
        // lead takes none.
        for db in &config.databases {
            let leading = rounds.get(db).is_some_and(|r| r.leading);
            if let Ok(d) = state.catalog.get(db) {
                d.hub.set_write_deadline(Some(if leading {
                    renewed + config.lease_ttl / 2
                } else {
                    Instant::now()
                }));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

/// One round for database `db`: publish progress, then lead, follow, or stand for election.
async fn step(
    state: &Arc<ServerState>,
    config: &HaConfig,
    e: &mut Etcd,
    lease: i64,
    renewed: Instant,
    db: &str,
    round: &mut Round,
) -> Result<(), String> {
    let base = format!("/chainlog/{}/{db}", config.cluster);
    let local = state.catalog.get(db).map_err(|e| e.to_string())?;
    let me = Member {
        advertise: config.advertise.clone(),
        epoch: local.ledger.epoch(),
        tx_id: local.ledger.state().tx_id,
    };
    e.put(
        &format!("{base}/members/{}", config.advertise),
        serde_json::to_vec(&me).unwrap_or_default(),
        lease,
    )
    .await?;
    let leader = e.get(&format!("{base}/leader")).await?.and_then(|kv| {
        let l: Leader = serde_json::from_slice(&kv.value).ok()?;
        Some((l, kv.create_revision, kv.lease))
    });
    let view = match &leader {
        Some((l, revision, _)) if l.advertise == config.advertise => {
            format!("etcd: this server leads (revision {revision})")
        }
        Some((l, _, _)) => format!("etcd: {} leads", l.advertise),
        None => format!(
            "etcd: no leader; this server is at epoch {} tx {}",
            me.epoch, me.tx_id
        ),
    };
    local.hub.set_coordinator_view(view);
    match leader {
        Some((l, revision, held)) if l.advertise == config.advertise && held == lease => {
            round.leaderless = 0;
            round.leading = true;
            lead(state, config, db, revision, renewed).await
        }
        Some((l, _, _)) if l.advertise != config.advertise => {
            round.leaderless = 0;
            round.leading = false;
            follow(state, config, db, &l.advertise).await
        }
        // Our own key under a lease we lost (it expires soon): not ours any more.
        Some(_) => {
            round.leading = false;
            Ok(())
        }
        None => {
            round.leading = false;
            round.leaderless += 1;
            if round.leaderless < 3 {
                return Ok(());
            }
            let members: Vec<Member> = e
                .prefix(&format!("{base}/members/"))
                .await?
                .into_iter()
                .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                .collect();
            let best = members.iter().max_by(|a, b| {
                (a.epoch, a.tx_id, &a.advertise).cmp(&(b.epoch, b.tx_id, &b.advertise))
            });
            if best.is_none_or(|b| b.advertise != config.advertise) {
                return Ok(());
            }
            let value = serde_json::to_vec(&Leader {
                advertise: config.advertise.clone(),
            })
            .unwrap_or_default();
            if let Some(revision) = e.create(&format!("{base}/leader"), value, lease).await? {
                tracing::warn!(
                    database = db,
                    revision,
                    tx_id = me.tx_id,
                    "failover: this server leads now"
                );
                round.leaderless = 0;
                round.leading = true;
                lead(state, config, db, revision, renewed).await?;
            }
            Ok(())
        }
    }
}

/// This server leads `db`: it must be a primary, in an epoch of at least the leadership's
/// etcd revision.
async fn lead(
    state: &Arc<ServerState>,
    config: &HaConfig,
    db: &str,
    revision: i64,
    renewed: Instant,
) -> Result<(), String> {
    let local = state.catalog.get(db).map_err(|e| e.to_string())?;
    local
        .hub
        .set_write_deadline(Some(renewed + config.lease_ttl / 2));
    let r = &local.settings.replication;
    let fenced = local.hub.fenced().is_some();
    let epoch = u64::try_from(revision).unwrap_or(0);
    if !r.is_replica()
        && !fenced
        && r.sync_acks.unwrap_or(0) == config.sync_acks
        && local.ledger.epoch() >= epoch
    {
        return Ok(());
    }
    let update = Settings {
        replication: ReplicationSettings {
            is_replica: Some(false),
            sync_acks: Some(config.sync_acks),
            ..ReplicationSettings::default()
        },
        ..Settings::default()
    };
    let (catalog, db_name) = (state.catalog.clone(), db.to_string());
    tokio::task::spawn_blocking(move || {
        let d = catalog.update_with_epoch(&db_name, &update, epoch)?;
        if d.ledger.epoch() < epoch || d.hub.fenced().is_some() {
            // A primary already (a fenced former leader elected again): a new epoch all the
            // same, so that what the others did meanwhile cannot be mistaken for ours.
            d.hub.unfence_in(d.ledger.dir());
            if d.ledger.epoch() < epoch {
                d.ledger.start_epoch(epoch)?;
            }
        }
        Ok::<_, super::catalog::CatalogError>(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    tracing::warn!(database = db, epoch, "failover: primary");
    Ok(())
}

/// Another server (`leader`) leads `db`: this one must follow it as a replica, rewinding
/// what it wrote that the leader does not have.
async fn follow(
    state: &Arc<ServerState>,
    config: &HaConfig,
    db: &str,
    leader: &str,
) -> Result<(), String> {
    let local = state.catalog.get(db).map_err(|e| e.to_string())?;
    let (host, port) = leader
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("leader address {leader:?} is not host:port"))?;
    let r = &local.settings.replication;
    if r.is_replica() && r.primary_host.as_deref() == Some(&host) && r.primary_port == Some(port) {
        return Ok(());
    }
    // Stop taking writes at once; the update below makes it a replica.
    local.hub.set_write_deadline(Some(Instant::now()));
    let update = Settings {
        replication: ReplicationSettings {
            is_replica: Some(true),
            primary_host: Some(host),
            primary_port: Some(port),
            primary_database: Some(db.to_string()),
            primary_username: Some(config.username.clone()),
            primary_password: Some(SecretString::from(
                config.password.expose_secret().to_string(),
            )),
            allow_tx_discarding: Some(true),
            sync_acks: Some(0),
            ..ReplicationSettings::default()
        },
        ..Settings::default()
    };
    let (catalog, db_name) = (state.catalog.clone(), db.to_string());
    tokio::task::spawn_blocking(move || catalog.update(&db_name, &update))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    tracing::warn!(database = db, %leader, "failover: following the leader");
    Ok(())
}
