//! `user add|passwd|remove|list` and `token create|revoke|list`: who may use
//! the HTTP side. Passwords are read from stdin and hashed here (argon2id),
//! so that a password never crosses the admin socket. While `serve` runs the
//! change goes through its admin socket (it owns the audit log); otherwise
//! it is made here. Every change is audited; a change that cannot be
//! audited is not made.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use cxr_audit::{AuditLog, Event};
use cxr_http::credentials::{self, hash_password, Role};
use serde_json::{json, Value};

use crate::bundle_cmd::print;
use crate::device::{now_unix_ms, Device, DeviceArgs};

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a local user; the password (at least 12 characters) is read from
    /// stdin, one line.
    Add {
        name: String,
        #[arg(long)]
        role: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Set a user's password (read from stdin, one line).
    Passwd {
        name: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    Remove {
        name: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Names and roles (never hashes).
    List {
        #[command(flatten)]
        device: DeviceArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// A new API token for machines; the token is printed alone on the last
    /// line, once: only its digest is kept.
    Create {
        #[arg(long)]
        role: String,
        /// What the token is for (a modality, a script).
        #[arg(long, default_value = "")]
        label: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Refuse a token from now on (its id: the part after `cxr_`).
    Revoke {
        id: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Ids, roles and labels.
    List {
        #[command(flatten)]
        device: DeviceArgs,
    },
}

fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("password (at least 12 characters; it is shown as typed): ");
    }
    let mut line = String::new();
    std::io::stdin().lock().take_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// One line from stdin, at most 1 KiB.
trait TakeLine {
    fn take_line(&mut self, line: &mut String) -> std::io::Result<usize>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(&mut self, line: &mut String) -> std::io::Result<usize> {
        std::io::Read::take(self, 1024).read_line(line)
    }
}

/// The request for the admin socket (passwords already hashed).
fn request_of_user(cmd: &UserCommand) -> anyhow::Result<(Value, &DeviceArgs)> {
    Ok(match cmd {
        UserCommand::Add { name, role, device } => {
            let role = Role::parse(role)?;
            let hash = hash_password(&read_password()?)?;
            (
                json!({ "op": "access_user_add", "name": name, "role": role.name(), "hash": hash }),
                device,
            )
        }
        UserCommand::Passwd { name, device } => {
            let hash = hash_password(&read_password()?)?;
            (
                json!({ "op": "access_user_passwd", "name": name, "hash": hash }),
                device,
            )
        }
        UserCommand::Remove { name, device } => {
            (json!({ "op": "access_user_remove", "name": name }), device)
        }
        UserCommand::List { device } => (json!({ "op": "access_list" }), device),
    })
}

fn request_of_token(cmd: &TokenCommand) -> anyhow::Result<(Value, &DeviceArgs)> {
    Ok(match cmd {
        TokenCommand::Create {
            role,
            label,
            device,
        } => {
            let role = Role::parse(role)?;
            (
                json!({ "op": "access_token_create", "role": role.name(), "label": label }),
                device,
            )
        }
        TokenCommand::Revoke { id, device } => {
            (json!({ "op": "access_token_revoke", "id": id }), device)
        }
        TokenCommand::List { device } => (json!({ "op": "access_list" }), device),
    })
}

fn text<'a>(request: &'a Value, field: &str) -> &'a str {
    request[field].as_str().unwrap_or_default()
}

/// Make one change to the credentials file and audit it (`actor` made it).
fn change(
    request: &Value,
    state_dir: &Path,
    actor: &str,
) -> Result<(Value, Event), credentials::CredentialError> {
    let op = text(request, "op");
    let role = Role::parse(text(request, "role"));
    let (subject, extra) = credentials::update(state_dir, |c| match op {
        "access_user_add" => {
            let role = role?;
            c.add_user(
                text(request, "name"),
                role,
                text(request, "hash").to_owned(),
            )?;
            Ok((
                text(request, "name").to_owned(),
                json!({ "role": role.name() }),
            ))
        }
        "access_user_passwd" => {
            c.set_password_hash(text(request, "name"), text(request, "hash").to_owned())?;
            Ok((text(request, "name").to_owned(), json!({})))
        }
        "access_user_remove" => {
            c.remove_user(text(request, "name"))?;
            Ok((text(request, "name").to_owned(), json!({})))
        }
        "access_token_create" => {
            let role = role?;
            let (id, token) = c.create_token(role, text(request, "label"), now_unix_ms())?;
            Ok((id, json!({ "role": role.name(), "token": token })))
        }
        _ => {
            c.revoke_token(text(request, "id"))?;
            Ok((text(request, "id").to_owned(), json!({})))
        }
    })?;
    let event = Event::AccessChanged {
        actor: actor.to_owned(),
        action: op.trim_start_matches("access_").to_owned(),
        subject: subject.clone(),
        role: extra["role"].as_str().map(str::to_owned),
    };
    let mut reply = json!({ "ok": true, "subject": subject });
    if let Some(token) = extra.get("token") {
        reply["token"] = token.clone();
    }
    Ok((reply, event))
}

/// Who changes access from the command line (here or over the admin socket).
pub(crate) const DEVICE_CONSOLE: &str = "device console";

/// Apply one access request (list, or a change that is audited with `actor`).
pub(crate) fn apply(request: &Value, state_dir: &Path, audit: &mut AuditLog, actor: &str) -> Value {
    if request["op"] == "access_list" {
        return match credentials::load(&credentials::credentials_path(state_dir)) {
            Ok(c) => json!({
                "ok": true,
                "users": c.users.iter().map(|u| json!({ "name": u.name, "role": u.role.name() })).collect::<Vec<_>>(),
                "tokens": c.tokens.iter().map(|t| json!({ "id": t.id, "role": t.role.name(), "label": t.label, "created_unix_ms": t.created_unix_ms })).collect::<Vec<_>>(),
            }),
            Err(e) => json!({ "ok": false, "code": e.code(), "message": e.to_string() }),
        };
    }
    let known = [
        "access_user_add",
        "access_user_passwd",
        "access_user_remove",
        "access_token_create",
        "access_token_revoke",
    ];
    if !known.contains(&text(request, "op")) {
        return json!({ "ok": false, "code": "ADMIN_UNKNOWN_REQUEST", "message": "unknown request" });
    }
    if let Err(e) = audit.ensure_room() {
        return json!({ "ok": false, "code": e.code(), "message": format!("not changed: the audit log cannot take the record: {e}") });
    }
    let path = credentials::credentials_path(state_dir);
    let before = match credentials::load(&path) {
        Ok(c) => c,
        Err(e) => return json!({ "ok": false, "code": e.code(), "message": e.to_string() }),
    };
    match change(request, state_dir, actor) {
        Ok((mut reply, event)) => match audit.append(now_unix_ms(), event) {
            Ok(seq) => {
                reply["audit_seq"] = json!(seq);
                reply
            }
            // Not audited, so not made: the previous file is put back.
            Err(e) => {
                let restored = credentials::update(state_dir, |c| {
                    *c = before;
                    Ok(())
                });
                json!({ "ok": false, "code": e.code(), "message": format!("not changed: the audit log could not take the record: {e}"), "restored": restored.is_ok() })
            }
        },
        Err(e) => json!({ "ok": false, "code": e.code(), "message": e.to_string() }),
    }
}

fn send(request: &Value, device_args: &DeviceArgs) -> anyhow::Result<ExitCode> {
    let device = Device::open(device_args)?;
    let state = &device.board.state_dir;
    let reply = match crate::admin_client::ask(state, request)? {
        Some(reply) => reply,
        None => {
            let mut audit = device.open_audit()?;
            apply(request, state, &mut audit, DEVICE_CONSOLE)
        }
    };
    let token = reply["token"].as_str().map(str::to_owned);
    let mut shown = reply.clone();
    if let Some(map) = shown.as_object_mut() {
        map.remove("token");
    }
    print(&shown);
    // The token alone on the last line, for scripts: `| tail -n1`.
    if let Some(token) = token {
        println!("{token}");
    }
    Ok(ExitCode::from(if reply["ok"] == true { 0 } else { 1 }))
}

pub fn run_user(cmd: &UserCommand) -> anyhow::Result<ExitCode> {
    let (request, device) = request_of_user(cmd)?;
    send(&request, device)
}

pub fn run_token(cmd: &TokenCommand) -> anyhow::Result<ExitCode> {
    let (request, device) = request_of_token(cmd)?;
    send(&request, device)
}
