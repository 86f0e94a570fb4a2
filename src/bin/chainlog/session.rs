//! Who the CLI talks to and as whom: the connection, the login, the trusted-state file.

use crate::out::Out;
use crate::Failure;
use chainlog::client::{Client, ClientError, ClientTls, Timeouts, VerifiedClient};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The global options a command connects with.
pub struct Session {
    pub addr: String,
    pub user: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub db: String,
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key files, for mutual TLS.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    pub connect_timeout: Duration,
    pub timeout: Option<Duration>,
    pub session_file: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    pub server_key: Option<String>,
}

/// A stored login: `{"sessions": {"<address> <user>": {"token", "expires_at_ms"}}}`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SessionFile {
    sessions: BTreeMap<String, Stored>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Stored {
    token: String,
    expires_at_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn read_file(p: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(p).map_err(|e| Failure::Error(format!("{}: {e}", p.display())))
}

/// The first line of a file, for passwords.
pub fn first_line(path: &std::path::Path) -> Result<String, Failure> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| Failure::Error(format!("{}: {e}", path.display())))?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

impl Session {
    /// Connects, without logging in.
    pub async fn dial(&self) -> Result<Client, Failure> {
        let tls = if self.tls_ca.is_some() || self.tls_identity.is_some() {
            Some(ClientTls {
                ca_pem: self.tls_ca.as_deref().map(read_file).transpose()?,
                identity_pem: match &self.tls_identity {
                    Some((c, k)) => Some((read_file(c)?, read_file(k)?)),
                    None => None,
                },
                domain: None,
            })
        } else {
            None
        };
        let timeouts = Timeouts {
            connect: self.connect_timeout,
            request: self.timeout,
        };
        Ok(Client::connect_with(&self.addr, tls, timeouts).await?)
    }

    fn password(&self) -> Result<Option<String>, Failure> {
        Ok(match (&self.password, &self.password_file) {
            (_, Some(f)) => Some(first_line(f)?),
            (Some(p), None) => Some(p.clone()),
            (None, None) => None,
        })
    }

    fn session_path(&self) -> PathBuf {
        self.session_file
            .clone()
            .unwrap_or_else(|| home_file("session.json"))
    }

    fn session_key(&self) -> String {
        format!("{} {}", self.addr, self.user)
    }

    fn load_sessions(&self) -> Result<SessionFile, Failure> {
        let path = self.session_path();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Failure::Error(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SessionFile::default()),
            Err(e) => Err(Failure::Error(format!("{}: {e}", path.display()))),
        }
    }

    fn save_sessions(&self, f: &SessionFile) -> Result<(), Failure> {
        let path = self.session_path();
        let fail = |e: &dyn std::fmt::Display| Failure::Error(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(&e))?;
        }
        let bytes = serde_json::to_vec_pretty(f).map_err(|e| fail(&e))?;
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| fail(&e))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| fail(&e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| fail(&e))
    }

    /// The stored, unexpired session token of this user on this server.
    fn stored_token(&self) -> Result<Option<String>, Failure> {
        let f = self.load_sessions()?;
        Ok(f.sessions
            .get(&self.session_key())
            .filter(|s| s.expires_at_ms > now_ms())
            .map(|s| s.token.clone()))
    }

    /// A connection failure on the first call, with what it most likely means here: a TLS
    /// server without a client certificate given fails in several ways (an alert, a closed
    /// connection) depending on timing.
    fn first_call_failure(&self, e: ClientError) -> Failure {
        if let ClientError::Status(st) = &e {
            if let Some(cause) = chainlog::client::transport_failure(st) {
                let hint = if self.addr.starts_with("https://") && self.tls_identity.is_none() {
                    "; if the server requires a client certificate (mutual TLS), give --tls-cert and --tls-key"
                } else if self.addr.starts_with("http://")
                    && !cause.starts_with("no answer in time")
                {
                    "; if the server uses TLS, use an https:// address (with --tls-ca)"
                } else {
                    ""
                };
                return Failure::Error(format!("cannot talk to {}: {cause}{hint}", self.addr));
            }
        }
        e.into()
    }

    /// Connects and logs in: with the stored session of `chainlog login` if there is one
    /// (and a password to log in again if the server no longer knows it), else with the
    /// password.
    pub async fn connect(&self) -> Result<Client, Failure> {
        let client = self.dial().await?;
        let password = self.password()?;
        if let Some(token) = self.stored_token()? {
            client.use_token(token);
            // One cheap call tells whether the server still knows the session.
            match client.list_databases().await {
                Ok(_) => return Ok(client),
                Err(ClientError::Status(s)) if s.code() == tonic::Code::Unauthenticated => {
                    if password.is_none() {
                        return Err(Failure::Error(format!(
                            "the stored session of {} on {} is no longer valid (revoked or expired): run `chainlog login` again",
                            self.user, self.addr
                        )));
                    }
                }
                Err(e) => return Err(self.first_call_failure(e)),
            }
        }
        let Some(password) = password else {
            return Err(Failure::Error(
                "no password: give --password-file, CHAINLOG_PASSWORD or --password, or run `chainlog login` first".into(),
            ));
        };
        client
            .login(&self.user, &password)
            .await
            .map_err(|e| self.first_call_failure(e))?;
        Ok(client)
    }

    fn state_file(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| home_file("state.json"))
    }

    /// The server's public key given with --server-key, parsed.
    pub fn server_key(&self) -> Result<Option<ed25519_dalek::VerifyingKey>, Failure> {
        let Some(h) = &self.server_key else {
            return Ok(None);
        };
        let d = chainlog::integrity::Digest::from_hex(h)
            .ok_or_else(|| Failure::Error("--server-key: 64 hex characters".into()))?;
        Ok(Some(
            ed25519_dalek::VerifyingKey::from_bytes(&d.0)
                .map_err(|e| Failure::Error(format!("--server-key: {e}")))?,
        ))
    }

    /// Connects, logs in, and loads the trusted states.
    pub async fn verified(&self) -> Result<VerifiedClient, Failure> {
        let key = self.server_key()?;
        Ok(VerifiedClient::new(
            self.connect().await?,
            self.state_file(),
            key,
        )?)
    }
}

/// `~/.chainlog/<name>` (`./.chainlog-<name>` without a home directory).
fn home_file(name: &str) -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".chainlog").join(name),
        None => PathBuf::from(format!(".chainlog-{name}")),
    }
}

/// `chainlog login`: logs in with the password and stores the session.
pub async fn login(s: &Session, out: &Out) -> Result<(), Failure> {
    let Some(password) = s.password()? else {
        return Err(Failure::Error(
            "login needs the password: --password-file, CHAINLOG_PASSWORD or --password".into(),
        ));
    };
    let client = s.dial().await?;
    let r = client.login(&s.user, &password).await?;
    let mut f = s.load_sessions()?;
    f.sessions.retain(|_, v| v.expires_at_ms > now_ms());
    f.sessions.insert(
        s.session_key(),
        Stored {
            token: r.token,
            expires_at_ms: r.expires_at_ms,
        },
    );
    s.save_sessions(&f)?;
    let path = s.session_path();
    out.print(
        json!({"user": s.user, "addr": s.addr, "expires_at_ms": r.expires_at_ms,
               "session_file": path.display().to_string()}),
        || {
            format!(
                "logged in to {} as {} until {} (session kept in {})",
                s.addr,
                s.user,
                crate::out::rfc3339_ms(r.expires_at_ms),
                path.display()
            )
        },
    );
    Ok(())
}

/// `chainlog logout`: revokes and forgets the stored session.
pub async fn logout(s: &Session, out: &Out) -> Result<(), Failure> {
    let mut f = s.load_sessions()?;
    let Some(stored) = f.sessions.remove(&s.session_key()) else {
        out.print(json!({"logged_out": false}), || {
            format!("no stored session of {} on {}", s.user, s.addr)
        });
        return Ok(());
    };
    let client = s.dial().await?;
    client.use_token(stored.token);
    // An expired or already revoked session is gone on the server too.
    match client.logout().await {
        Ok(()) => {}
        Err(ClientError::Status(st)) if st.code() == tonic::Code::Unauthenticated => {}
        Err(e) => return Err(e.into()),
    }
    s.save_sessions(&f)?;
    out.print(json!({"logged_out": true}), || {
        format!("logged out {} from {}", s.user, s.addr)
    });
    Ok(())
}
