//! Users, their passwords (Argon2id hashes), their per-database permissions, and login
//! sessions (random 256-bit tokens, held in memory only as BLAKE3 hashes, compared in
//! constant time, expiring). Users are recorded through a [`UserStore`]: the system database
//! on a primary server (`server::system`); on a replica server they follow the primary's and
//! cannot be changed here.

use crate::storage::StorageError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;

/// Shortest password accepted for a new user or a password change.
pub const PASSWORD_BYTES_MIN: usize = 8;
/// Longest user name.
pub const USER_NAME_BYTES_MAX: usize = 64;
/// The superuser created at first start.
pub const ADMIN_USER: &str = "admin";

/// What a user may do on one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Reads and verified reads.
    Read,
    /// Reads and writes.
    ReadWrite,
    /// Everything on the database.
    Admin,
    /// Read, plus following the database as a replica (Follow, ExportTx): the only
    /// permission, besides admin, whose streams count as replicas for synchronous commits.
    Replication,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::ReadWrite => "readwrite",
            Permission::Admin => "admin",
            Permission::Replication => "replication",
        })
    }
}

impl Permission {
    /// Whether holding `self` gives what `needed` asks for.
    pub fn allows(self, needed: Permission) -> bool {
        use Permission as P;
        matches!(
            (self, needed),
            (P::Admin, _)
                | (P::Read | P::ReadWrite | P::Replication, P::Read)
                | (P::ReadWrite, P::ReadWrite)
                | (P::Replication, P::Replication)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong user or wrong password: deliberately not saying which.
    #[error("invalid user or password")]
    BadCredentials,
    #[error("missing or invalid session token")]
    NoSession,
    #[error("user {user:?} lacks the {needed} permission on {database:?}")]
    Denied {
        user: String,
        database: String,
        needed: Permission,
    },
    #[error("superuser permission required")]
    NotSuperuser,
    /// A deactivated user's correct password: it may not log in.
    #[error("user {0:?} is deactivated")]
    Inactive(String),
    /// A change that would leave no active superuser, or a user acting on themselves where
    /// that would lock them out.
    #[error("{0}")]
    Refused(String),
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("user {0:?} not found")]
    NotFound(String),
    #[error("invalid user name: use 1 to 64 of a-z, A-Z, 0-9, '_', '-', '.' and '@'")]
    InvalidName,
    #[error("password too short: at least {PASSWORD_BYTES_MIN} bytes")]
    WeakPassword,
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Users can be changed only on the primary this server replicates.
    #[error("this server replicates {primary}: users are changed there, and follow here")]
    ReplicaServer { primary: String },
    /// The system database could not record the change.
    #[error("recording the change in the system database failed: {0}")]
    Store(String),
}

/// Records changed users durably (`None`: removed) before they take effect; an error leaves
/// everything as it was.
pub type UserStore =
    Box<dyn Fn(&[(String, Option<UserRecord>)]) -> Result<(), AuthError> + Send + Sync>;

fn check_user_name(name: &str) -> Result<(), AuthError> {
    let valid = !name.is_empty()
        && name.len() <= USER_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(AuthError::InvalidName)
    }
}

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) {
    // The OS source failing is not something a server can go on from.
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// A random password, for the first admin: 24 characters of [a-zA-Z0-9].
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut b = [0u8; 24];
    random_bytes(&mut b);
    // 256 % 62 != 0: the slight bias leaves over 140 bits of entropy.
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    /// PHC string of an Argon2id hash.
    password: String,
    pub superuser: bool,
    pub grants: BTreeMap<String, Permission>,
    /// A deactivated user keeps its record but cannot log in, and its sessions ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inactive: bool,
}

fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    random_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| AuthError::WeakPassword)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| AuthError::WeakPassword)
}

fn password_matches(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

struct Session {
    user: String,
    expires: SystemTime,
}

/// Users and sessions.
pub struct Auth {
    store: UserStore,
    users: RwLock<BTreeMap<String, UserRecord>>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    token_ttl: Duration,
    /// A hash to verify against when the user does not exist, so a login takes as long for a
    /// wrong user as for a wrong password.
    decoy: String,
    /// Bumped on every change to users, grants or sessions: long-lived streams check their
    /// caller again on each bump, so a revocation ends them at once.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Auth {
    /// Users as recorded (`users`), changes recorded through `store`.
    pub fn new(
        users: BTreeMap<String, UserRecord>,
        token_ttl: Duration,
        store: UserStore,
    ) -> Result<Auth, AuthError> {
        Ok(Auth {
            store,
            users: RwLock::new(users),
            sessions: Mutex::new(HashMap::new()),
            token_ttl,
            decoy: hash_password(&random_password())?,
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Creates the first superuser, `name`, at a server's first start. Its password is the
    /// operator's choice, kept whatever its length (a short one is warned about).
    pub fn create_first(&self, name: &str, password: &str) -> Result<(), AuthError> {
        check_user_name(name)?;
        if password.len() < PASSWORD_BYTES_MIN {
            tracing::warn!(user = %name, "the first superuser's password is shorter than {PASSWORD_BYTES_MIN} bytes; change it (chainlog user password)");
        }
        let hash = hash_password(password)?;
        self.change(|users| {
            users.insert(
                name.to_string(),
                UserRecord {
                    password: hash,
                    superuser: true,
                    grants: BTreeMap::new(),
                    inactive: false,
                },
            );
            Ok(())
        })
    }

    /// Replaces every user with `users` as the primary's system database now holds them (a
    /// replica server following it); open streams check their callers again.
    pub fn reload(&self, users: BTreeMap<String, UserRecord>) {
        let mut current = self
            .users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current == users {
            return;
        }
        // A changed password ends the user's sessions here, as on the primary.
        let moved: Vec<String> = current
            .iter()
            .filter(|(n, u)| users.get(*n).is_none_or(|v| v.password != u.password))
            .map(|(n, _)| n.clone())
            .collect();
        *current = users;
        drop(current);
        if !moved.is_empty() {
            self.sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|_, s| !moved.contains(&s.user));
        }
        self.changed();
    }

    /// Records the users that differ between `current` and `next`.
    fn persist(
        &self,
        current: &BTreeMap<String, UserRecord>,
        next: &BTreeMap<String, UserRecord>,
    ) -> Result<(), AuthError> {
        let mut changed: Vec<(String, Option<UserRecord>)> = next
            .iter()
            .filter(|(n, u)| current.get(*n) != Some(*u))
            .map(|(n, u)| (n.clone(), Some(u.clone())))
            .collect();
        changed.extend(
            current
                .keys()
                .filter(|n| !next.contains_key(*n))
                .map(|n| (n.clone(), None)),
        );
        if changed.is_empty() {
            return Ok(());
        }
        (self.store)(&changed)
    }

    fn users(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, UserRecord>> {
        self.users
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a password (slow on purpose: Argon2id) and opens a session.
    pub fn login(&self, user: &str, password: &str) -> Result<(String, SystemTime), AuthError> {
        let phc = self.users().get(user).map(|u| u.password.clone());
        let ok = match &phc {
            Some(phc) => password_matches(phc, password),
            None => {
                let _ = password_matches(&self.decoy, password);
                false
            }
        };
        if !ok {
            return Err(AuthError::BadCredentials);
        }
        if self.users().get(user).is_some_and(|u| u.inactive) {
            return Err(AuthError::Inactive(user.to_string()));
        }
        let mut token = [0u8; 32];
        random_bytes(&mut token);
        let token = crate::integrity::hex::encode(&token);
        let expires = SystemTime::now() + self.token_ttl;
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = SystemTime::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            *blake3::hash(token.as_bytes()).as_bytes(),
            Session {
                user: user.to_string(),
                expires,
            },
        );
        Ok((token, expires))
    }

    /// The user a token belongs to.
    pub fn session(&self, token: &str) -> Result<String, AuthError> {
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match sessions.get_key_value(&key) {
            // The map lookup is by hash; the final comparison is constant-time.
            Some((stored, s))
                if bool::from(stored.ct_eq(&key)) && s.expires > SystemTime::now() =>
            {
                if self.users().get(&s.user).is_some_and(|u| !u.inactive) {
                    Ok(s.user.clone())
                } else {
                    Err(AuthError::NoSession)
                }
            }
            _ => Err(AuthError::NoSession),
        }
    }

    pub fn logout(&self, token: &str) {
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
        self.changed();
    }

    /// Follows changes to users, grants and sessions (a counter bumped on each).
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn is_superuser(&self, user: &str) -> bool {
        self.users()
            .get(user)
            .is_some_and(|u| u.superuser && !u.inactive)
    }

    pub fn require_superuser(&self, user: &str) -> Result<(), AuthError> {
        if self.is_superuser(user) {
            Ok(())
        } else {
            Err(AuthError::NotSuperuser)
        }
    }

    /// The caller's permission on `database`, if any.
    pub fn permission(&self, user: &str, database: &str) -> Option<Permission> {
        let users = self.users();
        let u = users.get(user).filter(|u| !u.inactive)?;
        if u.superuser {
            return Some(Permission::Admin);
        }
        u.grants.get(database).copied()
    }

    pub fn require(&self, user: &str, database: &str, needed: Permission) -> Result<(), AuthError> {
        match self.permission(user, database) {
            Some(p) if p.allows(needed) => Ok(()),
            _ => Err(AuthError::Denied {
                user: user.to_string(),
                database: database.to_string(),
                needed,
            }),
        }
    }

    pub fn list(&self) -> Vec<(String, UserRecord)> {
        self.users()
            .iter()
            .map(|(n, u)| (n.clone(), u.clone()))
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<UserRecord, AuthError> {
        self.users()
            .get(name)
            .cloned()
            .ok_or_else(|| AuthError::NotFound(name.to_string()))
    }

    fn change(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, UserRecord>) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        let mut users = self
            .users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = users.clone();
        f(&mut next)?;
        self.persist(&users, &next)?;
        *users = next;
        drop(users);
        self.changed();
        Ok(())
    }

    pub fn create(&self, name: &str, password: &str, superuser: bool) -> Result<(), AuthError> {
        check_user_name(name)?;
        if password.len() < PASSWORD_BYTES_MIN {
            return Err(AuthError::WeakPassword);
        }
        let hash = hash_password(password)?;
        self.change(|users| {
            if users.contains_key(name) {
                return Err(AuthError::Exists(name.to_string()));
            }
            users.insert(
                name.to_string(),
                UserRecord {
                    password: hash,
                    superuser,
                    grants: BTreeMap::new(),
                    inactive: false,
                },
            );
            Ok(())
        })
    }

    /// `caller` changes `name`'s password: their own with the old password, anyone's if
    /// superuser. Ends the user's sessions.
    pub fn change_password(
        &self,
        caller: &str,
        name: &str,
        old: &str,
        new: &str,
    ) -> Result<(), AuthError> {
        if new.len() < PASSWORD_BYTES_MIN {
            return Err(AuthError::WeakPassword);
        }
        let record = self.get(name)?;
        if !self.is_superuser(caller) {
            if caller != name {
                return Err(AuthError::NotSuperuser);
            }
            if !password_matches(&record.password, old) {
                return Err(AuthError::BadCredentials);
            }
        }
        let hash = hash_password(new)?;
        self.change(|users| {
            let u = users
                .get_mut(name)
                .ok_or_else(|| AuthError::NotFound(name.to_string()))?;
            u.password = hash;
            Ok(())
        })?;
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, s| s.user != name);
        self.changed();
        Ok(())
    }

    /// Ends every session of `name`: its tokens stop working at once, and the streams they
    /// opened end at their next check (each change wakes them).
    fn end_sessions(&self, name: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, s| s.user != name);
        self.changed();
    }

    /// Refuses a change to `name` by `caller` that would leave the server without an active
    /// superuser, or lock the caller out of their own account.
    fn guard(
        users: &BTreeMap<String, UserRecord>,
        caller: &str,
        name: &str,
        what: &str,
    ) -> Result<(), AuthError> {
        if caller == name {
            return Err(AuthError::Refused(format!(
                "a user cannot {what} themselves; ask another superuser"
            )));
        }
        let u = users
            .get(name)
            .ok_or_else(|| AuthError::NotFound(name.to_string()))?;
        let others = users
            .iter()
            .filter(|(n, o)| *n != name && o.superuser && !o.inactive)
            .count();
        if u.superuser && !u.inactive && others == 0 {
            return Err(AuthError::Refused(format!(
                "{name:?} is the last active superuser: it cannot be {what}d"
            )));
        }
        Ok(())
    }

    /// Deactivates (`active` false) or reactivates `name` (immudb's SetActiveUser). A
    /// deactivated user's tokens stop working at once and it cannot log in.
    pub fn set_active(
        &self,
        caller: &str,
        name: &str,
        active: bool,
    ) -> Result<UserRecord, AuthError> {
        self.change(|users| {
            if !active {
                Self::guard(users, caller, name, "deactivate")?;
            }
            let u = users
                .get_mut(name)
                .ok_or_else(|| AuthError::NotFound(name.to_string()))?;
            u.inactive = !active;
            Ok(())
        })?;
        if !active {
            self.end_sessions(name);
        }
        self.get(name)
    }

    /// Deletes `name`: its tokens stop working at once.
    pub fn delete(&self, caller: &str, name: &str) -> Result<(), AuthError> {
        self.change(|users| {
            Self::guard(users, caller, name, "delete")?;
            users.remove(name);
            Ok(())
        })?;
        self.end_sessions(name);
        Ok(())
    }

    /// Makes `name` a superuser or takes that away (its grants stay); a demoted user's
    /// streams are checked again at once.
    pub fn set_superuser(
        &self,
        caller: &str,
        name: &str,
        superuser: bool,
    ) -> Result<UserRecord, AuthError> {
        self.change(|users| {
            if !superuser {
                Self::guard(users, caller, name, "demote")?;
            }
            let u = users
                .get_mut(name)
                .ok_or_else(|| AuthError::NotFound(name.to_string()))?;
            u.superuser = superuser;
            Ok(())
        })?;
        self.get(name)
    }

    pub fn grant(
        &self,
        name: &str,
        database: &str,
        permission: Option<Permission>,
    ) -> Result<UserRecord, AuthError> {
        self.change(|users| {
            let u = users
                .get_mut(name)
                .ok_or_else(|| AuthError::NotFound(name.to_string()))?;
            match permission {
                Some(p) => u.grants.insert(database.to_string(), p),
                None => u.grants.remove(database),
            };
            Ok(())
        })?;
        self.get(name)
    }
}

impl From<crate::fs::FsError> for AuthError {
    fn from(e: crate::fs::FsError) -> AuthError {
        AuthError::Storage(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Users recorded in memory, as the system database would record them.
    fn memory_store() -> (UserStore, Arc<Mutex<BTreeMap<String, UserRecord>>>) {
        let kept = Arc::new(Mutex::new(BTreeMap::new()));
        let k = kept.clone();
        let store: UserStore = Box::new(move |changed: &[(String, Option<UserRecord>)]| {
            let mut k = k.lock().unwrap();
            for (n, u) in changed {
                match u {
                    Some(u) => k.insert(n.clone(), u.clone()),
                    None => k.remove(n),
                };
            }
            Ok(())
        });
        (store, kept)
    }

    fn first(ttl: Duration) -> (Auth, Arc<Mutex<BTreeMap<String, UserRecord>>>) {
        let (store, kept) = memory_store();
        let auth = Auth::new(BTreeMap::new(), ttl, store).unwrap();
        auth.create_first("admin", "first-password").unwrap();
        (auth, kept)
    }

    #[test]
    fn users_sessions_and_permissions() {
        let (auth, kept) = first(Duration::from_secs(60));
        let stored = serde_json::to_string(&*kept.lock().unwrap()).unwrap();
        assert!(stored.contains("$argon2id$") && !stored.contains("first-password"));
        assert!(matches!(
            auth.login("admin", "wrong-password"),
            Err(AuthError::BadCredentials)
        ));
        assert!(matches!(
            auth.login("nobody", "first-password"),
            Err(AuthError::BadCredentials)
        ));
        let (token, _) = auth.login("admin", "first-password").unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(auth.session(&token).unwrap(), "admin");
        assert!(matches!(auth.session("0123"), Err(AuthError::NoSession)));

        auth.create("ann", "ann-password", false).unwrap();
        assert!(matches!(
            auth.create("ann", "ann-password", false),
            Err(AuthError::Exists(_))
        ));
        assert!(matches!(
            auth.create("bob", "short", false),
            Err(AuthError::WeakPassword)
        ));
        assert!(matches!(
            auth.create("bad name", "long-enough", false),
            Err(AuthError::InvalidName)
        ));
        assert_eq!(auth.permission("ann", "db"), None);
        auth.grant("ann", "db", Some(Permission::Read)).unwrap();
        assert!(auth.require("ann", "db", Permission::Read).is_ok());
        assert!(matches!(
            auth.require("ann", "db", Permission::ReadWrite),
            Err(AuthError::Denied { .. })
        ));
        assert!(auth.require("admin", "db", Permission::Admin).is_ok());
        auth.grant("ann", "db", None).unwrap();
        assert!(auth.require("ann", "db", Permission::Read).is_err());

        let (t, _) = auth.login("ann", "ann-password").unwrap();
        assert!(matches!(
            auth.change_password("ann", "ann", "wrong", "new-password"),
            Err(AuthError::BadCredentials)
        ));
        auth.change_password("ann", "ann", "ann-password", "new-password")
            .unwrap();
        assert!(
            auth.session(&t).is_err(),
            "a password change ends the user's sessions"
        );
        assert!(auth.login("ann", "new-password").is_ok());
        auth.logout(&token);
        assert!(auth.session(&token).is_err());

        // What was recorded is what a restart loads.
        let users = kept.lock().unwrap().clone();
        assert_eq!(users.len(), 2);
        let (store, _) = memory_store();
        let again = Auth::new(users, Duration::from_secs(60), store).unwrap();
        assert!(again.login("admin", "first-password").is_ok());
        assert!(again.login("ann", "new-password").is_ok());
    }

    #[test]
    fn a_store_that_fails_changes_nothing() {
        let (store, _) = memory_store();
        let auth = Auth::new(BTreeMap::new(), Duration::from_secs(60), store).unwrap();
        auth.create_first("admin", "first-password").unwrap();
        let users = auth.list().into_iter().collect::<BTreeMap<_, _>>();
        let refuse: UserStore = Box::new(|_: &[(String, Option<UserRecord>)]| {
            Err(AuthError::ReplicaServer {
                primary: "p:3322".into(),
            })
        });
        let replica = Auth::new(users.clone(), Duration::from_secs(60), refuse).unwrap();
        assert!(matches!(
            replica.create("ann", "ann-password", false),
            Err(AuthError::ReplicaServer { .. })
        ));
        assert!(matches!(replica.get("ann"), Err(AuthError::NotFound(_))));
        // A reload from the primary brings its users, and ends the sessions of a user whose
        // password changed there.
        let (t, _) = replica.login("admin", "first-password").unwrap();
        auth.change_password("admin", "admin", "", "second-password")
            .unwrap();
        replica.reload(auth.list().into_iter().collect());
        assert!(replica.session(&t).is_err());
        assert!(replica.login("admin", "second-password").is_ok());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let (auth, _) = first(Duration::from_millis(1));
        let (token, _) = auth.login("admin", "first-password").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(auth.session(&token).is_err());
    }
}
