//! The HTTP API: `/kv/{key}` (GET, PUT, DELETE), `/kv/{key}/cas` (POST), `/health`,
//! `/cluster`, `/metrics`. Shapes and status codes are described in `docs/kv.md`.
//!
//! Every KV operation is a synevi transaction ([`KvTx`]), reads included: the answer is the
//! result of executing the operation at its place in the agreed order, so it is linearizable
//! whichever node answers it.
//!
//! Errors are JSON `{"error": "..."}`: 400 for anything wrong with the request (malformed
//! JSON, a missing or mistyped field, a key or value over its limit), 404 for an absent key
//! or an unknown endpoint, 405 for a wrong method, 503 when the node cannot reach a quorum in
//! time or is starting or stopping. A client's mistake is never a 500.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use synevi::SyneviError;

use crate::metrics::Operation;
use crate::state::{AppState, Health, Reachability};
use crate::transaction::{KvErr, KvOk, KvTx};

/// The API's router, with `state` as every handler's state.
pub fn router(state: AppState) -> Router {
    let body_bytes_max = state.limits().body_bytes_max();
    Router::new()
        .route("/kv/{key}", get(get_key).put(put_key).delete(delete_key))
        .route("/kv/{key}/cas", post(cas_key))
        .route("/health", get(health))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(state)
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, json!({ "error": self.message }))
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

/// Checks the key taken from the path.
fn key_of(state: &AppState, path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) = path.map_err(|rejection| {
        ApiError::bad_request(format!("bad key in the path: {}", rejection.body_text()))
    })?;
    let limit = state.limits().key_bytes_max;
    if key.len() > limit {
        return Err(ApiError::bad_request(format!(
            "key is {} bytes, over the limit of {limit} bytes",
            key.len()
        )));
    }
    Ok(key)
}

/// Parses the body as a JSON object with exactly the `allowed` fields.
fn object_of(
    body: Result<Bytes, BytesRejection>,
    allowed: &[&str],
) -> Result<Map<String, Value>, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::bad_request(format!("cannot read the body: {}", rejection.body_text()))
    })?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("malformed JSON body: {error}")))?;
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object with the fields {}",
            field_list(allowed)
        )));
    };
    if let Some(unknown) = object
        .keys()
        .find(|field| !allowed.contains(&field.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown field {unknown:?}; the body takes {}",
            field_list(allowed)
        )));
    }
    Ok(object)
}

fn field_list(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|field| format!("{field:?}"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// A required field that is a string, or, if `nullable`, null.
fn string_field(
    state: &AppState,
    object: &mut Map<String, Value>,
    field: &str,
    nullable: bool,
) -> Result<Option<String>, ApiError> {
    let value = match object.remove(field) {
        Some(Value::String(value)) => value,
        Some(Value::Null) if nullable => return Ok(None),
        Some(_) if nullable => {
            return Err(ApiError::bad_request(format!(
                "{field:?} must be a string or null"
            )))
        }
        Some(_) => return Err(ApiError::bad_request(format!("{field:?} must be a string"))),
        None => return Err(ApiError::bad_request(format!("missing field {field:?}"))),
    };
    let limit = state.limits().value_bytes_max;
    if value.len() > limit {
        return Err(ApiError::bad_request(format!(
            "{field:?} is {} bytes, over the limit of {limit} bytes",
            value.len()
        )));
    }
    Ok(Some(value))
}

/// Runs `transaction` through consensus on this node, recording its latency.
async fn execute(
    state: &AppState,
    operation: Operation,
    transaction: KvTx,
) -> Result<Result<KvOk, KvErr>, ApiError> {
    let Some(backend) = state.backend() else {
        return Err(ApiError::unavailable(
            "the node is starting: it is opening its store and replaying its event log",
        ));
    };
    if state.health() == Health::Stopping {
        return Err(ApiError::unavailable("the node is shutting down"));
    }
    let started = Instant::now();
    let request_id = synevi::Ulid::new().0;
    let timeout = state.request_timeout();
    let outcome = tokio::time::timeout(timeout, backend.transaction(request_id, transaction)).await;
    state.metrics().record_latency(operation, started.elapsed());
    match outcome {
        Ok(Ok(result)) => {
            if matches!(
                state.health(),
                Health::Starting { .. } | Health::NoQuorum { .. }
            ) {
                // A committed transaction proves a quorum as well as a probe does.
                state.set_health(Health::Ready);
            }
            Ok(result)
        }
        Ok(Err(error)) => Err(system_error(state, error)),
        Err(_) => Err(ApiError::unavailable(format!(
            "no result within {} ms; the operation may still take effect",
            timeout.as_millis()
        ))),
    }
}

/// The answer to a system error.
fn system_error(state: &AppState, error: SyneviError) -> ApiError {
    match error {
        SyneviError::QuorumUnreachable { .. } => {
            let message = format!("unavailable: {error}");
            state.quorum_lost(error.to_string());
            ApiError::unavailable(message)
        }
        SyneviError::ExecutionTimeout { .. } => ApiError::unavailable(format!(
            "unavailable: {error}; retry the read to see its effect"
        )),
        SyneviError::Invalidated { .. } => ApiError::unavailable(format!(
            "unavailable: {error}; the operation had no effect, retry it"
        )),
        SyneviError::ShutDown => ApiError::unavailable("the node is shutting down"),
        SyneviError::StoreFull(_) => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, error.to_string())
        }
        SyneviError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
        }
        other => {
            tracing::error!(error = %other, "a transaction failed on this node");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
        }
    }
}

/// The executor answered with a variant the operation cannot produce: a bug.
fn unexpected(result: &Result<KvOk, KvErr>) -> ApiError {
    tracing::error!(?result, "unexpected result for the operation");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected result {result:?}"),
    )
}

fn not_found_key(key: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("key {key:?} not found"))
}

/// Answers, counting the answer in the metrics.
fn answer(
    state: &AppState,
    operation: Operation,
    response: Result<Response, ApiError>,
) -> Response {
    let response = response.unwrap_or_else(IntoResponse::into_response);
    state
        .metrics()
        .record_response(operation, response.status().as_u16());
    response
}

async fn get_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let response = async {
        let key = key_of(&state, path)?;
        let result = execute(&state, Operation::Get, KvTx::Get { key: key.clone() }).await?;
        match result {
            Ok(KvOk::Value(Some(value))) => Ok(json_response(
                StatusCode::OK,
                json!({ "key": key, "value": value }),
            )),
            Ok(KvOk::Value(None)) => Err(not_found_key(&key)),
            other => Err(unexpected(&other)),
        }
    }
    .await;
    answer(&state, Operation::Get, response)
}

async fn put_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = async {
        let key = key_of(&state, path)?;
        let mut object = object_of(body, &["value"])?;
        let value = string_field(&state, &mut object, "value", false)?.unwrap_or_default();
        let transaction = KvTx::Put {
            key: key.clone(),
            value: value.clone(),
        };
        match execute(&state, Operation::Put, transaction).await? {
            Ok(KvOk::Put { previous }) => Ok(json_response(
                StatusCode::OK,
                json!({ "key": key, "value": value, "previous": previous }),
            )),
            other => Err(unexpected(&other)),
        }
    }
    .await;
    answer(&state, Operation::Put, response)
}

async fn cas_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = async {
        let key = key_of(&state, path)?;
        let mut object = object_of(body, &["expected", "value"])?;
        let expected = string_field(&state, &mut object, "expected", true)?;
        let value = string_field(&state, &mut object, "value", false)?.unwrap_or_default();
        let transaction = KvTx::Cas {
            key: key.clone(),
            expected,
            value: value.clone(),
        };
        match execute(&state, Operation::Cas, transaction).await? {
            Ok(KvOk::Swapped) => Ok(json_response(
                StatusCode::OK,
                json!({ "key": key, "value": value }),
            )),
            Err(KvErr::CasMismatch { current }) => Ok(json_response(
                StatusCode::CONFLICT,
                json!({ "current": current }),
            )),
            other => Err(unexpected(&other)),
        }
    }
    .await;
    answer(&state, Operation::Cas, response)
}

async fn delete_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let response = async {
        let key = key_of(&state, path)?;
        match execute(&state, Operation::Delete, KvTx::Delete { key: key.clone() }).await? {
            Ok(KvOk::Deleted {
                previous: Some(previous),
            }) => Ok(json_response(
                StatusCode::OK,
                json!({ "previous": previous }),
            )),
            Ok(KvOk::Deleted { previous: None }) => Err(not_found_key(&key)),
            other => Err(unexpected(&other)),
        }
    }
    .await;
    answer(&state, Operation::Delete, response)
}

async fn health(State(state): State<AppState>) -> Response {
    let serial = state.serial();
    match state.health() {
        Health::Ready => json_response(
            StatusCode::OK,
            json!({ "status": "ready", "serial": serial }),
        ),
        Health::Starting { reason } => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "starting", "serial": serial, "error": reason }),
        ),
        Health::NoQuorum { reason } => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "no_quorum", "serial": serial, "error": reason }),
        ),
        Health::Stopping => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "stopping", "serial": serial, "error": "the node is shutting down" }),
        ),
    }
}

fn health_label(health: &Health) -> &'static str {
    match health {
        Health::Ready => "ready",
        Health::Starting { .. } => "starting",
        Health::NoQuorum { .. } => "no_quorum",
        Health::Stopping => "stopping",
    }
}

async fn cluster(State(state): State<AppState>) -> Response {
    let mut members = vec![json!({
        "serial": state.serial(),
        "node_id": state.node_id().to_string(),
        "url": state.grpc_url(),
        "state": "self",
    })];
    for member in state.members() {
        let (reachability, since) = member.reachability();
        let mut entry = json!({
            "serial": member.serial,
            "node_id": member.node_id.to_string(),
            "url": member.url,
            "since_ms": u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        });
        let fields = match reachability {
            Reachability::Unknown => json!({ "state": "unknown" }),
            Reachability::Reachable => json!({ "state": "reachable" }),
            Reachability::Unreachable { error } => {
                json!({ "state": "unreachable", "error": error })
            }
        };
        if let (Value::Object(entry), Value::Object(fields)) = (&mut entry, fields) {
            entry.extend(fields);
        }
        members.push(entry);
    }
    let applied = state
        .backend()
        .map(|backend| backend.status().applied_count);
    json_response(
        StatusCode::OK,
        json!({
            "serial": state.serial(),
            "node_id": state.node_id().to_string(),
            "status": health_label(&state.health()),
            "applied": applied,
            "members": members,
        }),
    )
}

async fn metrics(State(state): State<AppState>) -> Response {
    let ready = state.health() == Health::Ready;
    let text = state
        .metrics()
        .render(ready, state.backend().map(|backend| &**backend));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {method} {}; the API has /kv/{{key}}, /kv/{{key}}/cas, /health, /cluster, /metrics",
            uri.path()
        ),
    )
    .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
    .into_response()
}
