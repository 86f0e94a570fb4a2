//! `chainlog user …`: users, passwords and permissions.

use crate::out::Out;
use crate::session::Session;
use crate::Failure;
use chainlog::wire;
use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create user NAME; the password comes from --new-password or the prompt-free
    /// CHAINLOG_NEW_PASSWORD
    Create {
        name: String,
        #[arg(long, env = "CHAINLOG_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
        #[arg(long)]
        superuser: bool,
    },
    /// List users and their permissions
    List,
    /// Grant NAME a permission on --db: read, readwrite, admin, or replication (read and
    /// following as a replica)
    Grant { name: String, permission: String },
    /// Revoke NAME's permission on --db
    Revoke { name: String },
    /// Change NAME's password
    Passwd {
        name: String,
        #[arg(long, env = "CHAINLOG_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
        /// NAME's current password (not needed by a superuser)
        #[arg(long, default_value = "")]
        old_password: String,
    },
    /// Deactivate NAME (immudb's set-active false): it keeps its grants but cannot log in,
    /// and its tokens stop working at once (superuser)
    Deactivate { name: String },
    /// Let a deactivated NAME log in again (superuser)
    Activate { name: String },
    /// Delete NAME: its tokens stop working at once (superuser)
    Delete { name: String },
    /// Make NAME a superuser (superuser)
    Promote { name: String },
    /// Take NAME's superuser permission away; its grants stay (superuser)
    Demote { name: String },
}

fn perm_name(p: i32) -> &'static str {
    match wire::Permission::try_from(p) {
        Ok(wire::Permission::Read) => "read",
        Ok(wire::Permission::Readwrite) => "readwrite",
        Ok(wire::Permission::Admin) => "admin",
        Ok(wire::Permission::Replication) => "replication",
        _ => "none",
    }
}

fn permission_of(s: &str) -> Result<wire::Permission, Failure> {
    match s {
        "read" => Ok(wire::Permission::Read),
        "readwrite" => Ok(wire::Permission::Readwrite),
        "admin" => Ok(wire::Permission::Admin),
        "replication" => Ok(wire::Permission::Replication),
        _ => Err(Failure::Error(format!(
            "unknown permission {s:?}: use read, readwrite, replication or admin"
        ))),
    }
}

fn user_json(u: &wire::User) -> serde_json::Value {
    json!({"name": u.name, "superuser": u.superuser, "active": u.active, "grants": u.grants.iter().map(|g| json!({"database": g.database,
        "permission": perm_name(g.permission)})).collect::<Vec<_>>()})
}

fn user_text(u: &wire::User) -> String {
    let grants: Vec<String> = u
        .grants
        .iter()
        .map(|g| format!("{}:{}", g.database, perm_name(g.permission)))
        .collect();
    format!(
        "{}{}{}\t{}",
        u.name,
        if u.superuser { " (superuser)" } else { "" },
        if u.active { "" } else { " (deactivated)" },
        grants.join(",")
    )
}

pub async fn run(cmd: &UserCmd, session: &Session, out: &Out) -> Result<(), Failure> {
    let c = session.connect().await?;
    let db = &session.db;
    match cmd {
        UserCmd::Create {
            name,
            new_password,
            superuser,
        } => {
            let u = c.create_user(name, new_password, *superuser).await?;
            out.print(user_json(&u), || format!("created user {}", u.name));
        }
        UserCmd::List => {
            let users = c.list_users().await?;
            out.print(
                json!(users.iter().map(user_json).collect::<Vec<_>>()),
                || users.iter().map(user_text).collect::<Vec<_>>().join("\n"),
            );
        }
        UserCmd::Grant { name, permission } => {
            let u = c.grant(name, db, permission_of(permission)?).await?;
            out.print(user_json(&u), || user_text(&u));
        }
        UserCmd::Revoke { name } => {
            let u = c.revoke(name, db).await?;
            out.print(user_json(&u), || user_text(&u));
        }
        UserCmd::Passwd {
            name,
            new_password,
            old_password,
        } => {
            c.change_password(name, old_password, new_password).await?;
            out.print(json!({"ok": true}), || {
                format!("password of {name} changed")
            });
        }
        UserCmd::Deactivate { name } | UserCmd::Activate { name } => {
            let active = matches!(cmd, UserCmd::Activate { .. });
            let u = c.set_active_user(name, active).await?;
            out.print(user_json(&u), || {
                if active {
                    format!("user {name} activated")
                } else {
                    format!("user {name} deactivated; its sessions ended")
                }
            });
        }
        UserCmd::Delete { name } => {
            c.delete_user(name).await?;
            out.print(json!({"name": name, "deleted": true}), || {
                format!("user {name} deleted; its sessions ended")
            });
        }
        UserCmd::Promote { name } | UserCmd::Demote { name } => {
            let superuser = matches!(cmd, UserCmd::Promote { .. });
            let u = c.set_superuser(name, superuser).await?;
            out.print(user_json(&u), || user_text(&u));
        }
    }
    Ok(())
}
