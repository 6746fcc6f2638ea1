//! Users and tokens for admins (the page's Access panel): the same changes,
//! checks and audit records as `cxr-appliance user|token`, made by the
//! binary, which owns the audit log. A password is hashed here (argon2id,
//! off the network task) and only its hash goes further; a new token is
//! shown once, in the answer that creates it.
//!
//! - `GET /api/v1/access`: users (names and roles) and tokens (ids, roles,
//!   labels); never a hash.
//! - `POST /api/v1/access/users` `{name, role, password}`;
//!   `POST /api/v1/access/users/{name}/password` `{password}`;
//!   `DELETE /api/v1/access/users/{name}` (not one's own account).
//! - `POST /api/v1/access/tokens` `{role, label}`;
//!   `DELETE /api/v1/access/tokens/{id}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::authorize;
use super::credentials::{hash_password, Role};
use super::{ApiError, HttpService};

#[derive(Debug, Deserialize)]
pub(super) struct NewUser {
    name: String,
    role: String,
    password: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct NewPassword {
    password: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct NewToken {
    role: String,
    #[serde(default)]
    label: String,
}

/// Ask the binary for one access request as `actor`; its refusal becomes
/// an error with the binary's code.
async fn ask(
    service: &Arc<HttpService>,
    request: Value,
    actor: String,
) -> Result<Json<Value>, ApiError> {
    let ops = Arc::clone(&service.operations);
    let reply = super::off_task(move || ops.access(&request, &actor)).await?;
    if reply["ok"] == true {
        return Ok(Json(reply));
    }
    let code = reply["code"].as_str().unwrap_or("ACCESS_REFUSED");
    let status = match code {
        "AUTH_USER_EXISTS" => StatusCode::CONFLICT,
        "AUTH_NO_USER" | "AUTH_NO_TOKEN" => StatusCode::NOT_FOUND,
        c if c.starts_with("AUDIT") => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    Err(ApiError::new(
        status,
        code,
        reply["message"].as_str().unwrap_or("refused"),
    ))
}

fn role(text: &str) -> Result<Role, ApiError> {
    Role::parse(text).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))
}

/// An argon2id hash of `password`, made off the network task.
async fn hashed(password: String) -> Result<String, ApiError> {
    super::off_task(move || hash_password(&password))
        .await?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))
}

pub(super) async fn list(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&service, &headers, &Method::GET, Role::Admin)?;
    ask(&service, json!({ "op": "access_list" }), principal.name).await
}

pub(super) async fn add_user(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Json(user): Json<NewUser>,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&service, &headers, &Method::POST, Role::Admin)?;
    let role = role(&user.role)?;
    let hash = hashed(user.password).await?;
    let request =
        json!({ "op": "access_user_add", "name": user.name, "role": role.name(), "hash": hash });
    ask(&service, request, principal.name).await
}

pub(super) async fn set_password(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(new): Json<NewPassword>,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&service, &headers, &Method::POST, Role::Admin)?;
    let hash = hashed(new.password).await?;
    let request = json!({ "op": "access_user_passwd", "name": name, "hash": hash });
    ask(&service, request, principal.name).await
}

pub(super) async fn remove_user(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&service, &headers, &Method::DELETE, Role::Admin)?;
    // The page must not lock out the admin using it; the device console
    // can still remove anyone.
    if principal.name == name {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ACCESS_OWN_ACCOUNT",
            "an admin cannot remove their own account from the page (fix: another admin, or `cxr-appliance user remove` on the device)",
        ));
    }
    let request = json!({ "op": "access_user_remove", "name": name });
    ask(&service, request, principal.name).await
}

pub(super) async fn create_token(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Json(new): Json<NewToken>,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&service, &headers, &Method::POST, Role::Admin)?;
    let role = role(&new.role)?;
    let request = json!({ "op": "access_token_create", "role": role.name(), "label": new.label });
    ask(&service, request, principal.name).await
}

pub(super) async fn revoke_token(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&service, &headers, &Method::DELETE, Role::Admin)?;
    let request = json!({ "op": "access_token_revoke", "id": id });
    ask(&service, request, principal.name).await
}
