//! Who the CLI talks to and as whom: the connection, the login, the trusted-state file.

use crate::Failure;
use chainlog::client::{Client, ClientTls, VerifiedClient};
use std::path::PathBuf;

/// The global options a command connects with.
pub struct Session {
    pub addr: String,
    pub user: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub db: String,
    pub tls_ca: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    pub server_key: Option<String>,
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
    /// Connects and logs in.
    pub async fn connect(&self) -> Result<Client, Failure> {
        let tls = match &self.tls_ca {
            Some(p) => Some(ClientTls {
                ca_pem: Some(
                    std::fs::read(p)
                        .map_err(|e| Failure::Error(format!("{}: {e}", p.display())))?,
                ),
                ..ClientTls::default()
            }),
            None => None,
        };
        let client = Client::connect(&self.addr, tls).await?;
        let password = match (&self.password, &self.password_file) {
            (_, Some(f)) => first_line(f)?,
            (Some(p), None) => p.clone(),
            (None, None) => {
                return Err(Failure::Error(
                    "no password: give --password-file, CHAINLOG_PASSWORD or --password".into(),
                ))
            }
        };
        client.login(&self.user, &password).await?;
        Ok(client)
    }

    fn state_file(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| match std::env::var_os("HOME") {
                Some(h) => PathBuf::from(h).join(".chainlog").join("state.json"),
                None => PathBuf::from(".chainlog-state.json"),
            })
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
