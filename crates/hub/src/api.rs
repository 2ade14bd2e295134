//! The HTTP + WebSocket API (JSON).
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | `/api/nodes` | every node, online or lost (`/devices` is the same list) |
//! | GET | `/api/nodes/{id}` | one node |
//! | PATCH | `/api/nodes/{id}` | `{name, volume, mute, delay_ms, zone}` (any of them); reaches the node at once (`/manual-adjust` takes the same body with an `id`) |
//! | POST | `/api/nodes/{id}/command` | `{"kind":"resync"}` or `{"kind":"identify"}` |
//! | GET | `/api/zones` | every zone (`/grouping` is the same list) |
//! | PUT | `/api/zones/{name}` | `{source, latency_ms}`: create or change |
//! | DELETE | `/api/zones/{name}` | remove (its players stay, in no zone) |
//! | GET | `/api/discovered` | nodes heard on mDNS (`_tutti._udp`), with whether they joined |
//! | GET | `/api/events` | WebSocket: every change, as JSON events |
//! | GET | `/api/openapi.json` | this, as OpenAPI 3 |
//!
//! Errors are `{"error": code, "message": text}` with the matching status.

use std::time::Instant;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::registry::{RegistryError, SettingsPatch};
use crate::{ControlError, Hub};
use tutti_proto::control::{Command, Zone};

/// An API error: status, code, message.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1, "message": self.2 }))).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::Registry(r) => return r.clone().into(),
            ControlError::Unsupported { .. } | ControlError::NotAnAction => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ControlError::Offline(_) => StatusCode::CONFLICT,
        };
        ApiError(status, e.code(), e.to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NoNode(_) => {
                ApiError(StatusCode::NOT_FOUND, "no_such_node", e.to_string())
            }
            RegistryError::NoZone(_) => {
                ApiError(StatusCode::NOT_FOUND, "no_such_zone", e.to_string())
            }
            RegistryError::Invalid { .. } => {
                ApiError(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
        }
    }
}

/// A JSON body that names the field and the fix when it does not parse.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, "bad_body", e.to_string()))?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            ApiError(StatusCode::BAD_REQUEST, "bad_json", format!("request body: {e}"))
        })
    }
}

/// The API's router.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/api/nodes", get(nodes))
        .route("/devices", get(nodes))
        .route("/api/nodes/{id}", get(node).patch(patch_node))
        .route("/api/nodes/{id}/command", post(command))
        .route("/manual-adjust", post(manual_adjust))
        .route("/api/zones", get(zones))
        .route("/grouping", get(zones))
        .route("/api/zones/{name}", axum::routing::put(put_zone).delete(delete_zone))
        .route("/api/discovered", get(discovered))
        .route("/api/events", get(events))
        .route("/api/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource: see /api/openapi.json".into(),
            )
        })
        .with_state(hub)
}

async fn nodes(State(hub): State<Hub>) -> impl IntoResponse {
    Json(hub.with(|r| (r.nodes(Instant::now()), vec![], false)))
}

async fn node(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(hub.with(|r| (r.node(&id, Instant::now()), vec![], false))?))
}

fn apply_patch(hub: &Hub, id: &str, patch: SettingsPatch) -> Result<Response, ApiError> {
    let (view, delivered) = hub.apply(id, patch)?;
    let status = if delivered { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(view)).into_response())
}

async fn patch_node(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    Body(patch): Body<SettingsPatch>,
) -> Result<Response, ApiError> {
    apply_patch(&hub, &id, patch)
}

#[derive(Deserialize)]
struct ManualAdjust {
    id: String,
    #[serde(flatten)]
    patch: SettingsPatch,
}

async fn manual_adjust(
    State(hub): State<Hub>,
    Body(m): Body<ManualAdjust>,
) -> Result<Response, ApiError> {
    apply_patch(&hub, &m.id, m.patch)
}

async fn command(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    Body(c): Body<Command>,
) -> Result<Response, ApiError> {
    hub.act(&id, c)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "sent": true }))).into_response())
}

async fn discovered(State(hub): State<Hub>) -> impl IntoResponse {
    #[derive(serde::Serialize)]
    struct Heard {
        #[serde(flatten)]
        node: crate::discovery::Discovered,
        linked: bool,
    }
    let list: Vec<Heard> =
        hub.discovered().into_iter().map(|(node, linked)| Heard { node, linked }).collect();
    Json(list)
}

async fn zones(State(hub): State<Hub>) -> impl IntoResponse {
    Json(hub.with(|r| (r.zones(), vec![], false)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneBody {
    source: Option<String>,
    latency_ms: Option<f64>,
}

async fn put_zone(
    State(hub): State<Hub>,
    Path(name): Path<String>,
    Body(z): Body<ZoneBody>,
) -> Result<impl IntoResponse, ApiError> {
    let zone = Zone { name, source: z.source, latency_ms: z.latency_ms };
    let routes = hub.with(|r| match r.put_zone(zone.clone()) {
        Ok(e) => (Ok(r.zone_routes(&zone.name)), vec![e], true),
        Err(e) => (Err(e), vec![], false),
    })?;
    // Its players play what it plays now (those offline get it when they connect).
    for (id, route) in routes {
        hub.command(&id, vec![route]);
    }
    Ok(Json(zone))
}

async fn delete_zone(
    State(hub): State<Hub>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    hub.with(|r| match r.delete_zone(&name) {
        Ok(events) => (Ok(()), events, true),
        Err(e) => (Err(e), vec![], false),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn events(State(hub): State<Hub>, ws: WebSocketUpgrade) -> impl IntoResponse {
    let rx = hub.subscribe();
    ws.on_upgrade(move |socket| stream_events(socket, rx))
}

async fn stream_events(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<tutti_proto::control::Event>,
) {
    loop {
        match rx.recv().await {
            Ok(e) => {
                let Ok(text) = serde_json::to_string(&e) else { continue };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            // A slow reader missed events: say so, and go on with the next ones.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                let text = json!({ "event": "lagged", "missed": n }).to_string();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

async fn openapi() -> impl IntoResponse {
    Json(openapi_document())
}

/// The API as an OpenAPI 3 document.
pub fn openapi_document() -> serde_json::Value {
    let node_ref = json!({ "$ref": "#/components/schemas/Node" });
    let error = json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Tutti hub", "version": env!("CARGO_PKG_VERSION") },
        "paths": {
            "/api/nodes": { "get": { "summary": "Every node, online or lost", "responses": { "200": { "description": "nodes", "content": { "application/json": { "schema": { "type": "array", "items": node_ref } } } } } } },
            "/api/nodes/{id}": {
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "get": { "summary": "One node", "responses": { "200": { "description": "node", "content": { "application/json": { "schema": node_ref } } }, "404": error } },
                "patch": { "summary": "Change name, volume, mute, per-device delay or zone; reaches the node at once",
                    "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SettingsPatch" } } } },
                    "responses": { "200": { "description": "applied" }, "202": { "description": "saved; the node did not take it yet" }, "400": error, "404": error, "422": error } }
            },
            "/api/nodes/{id}/command": {
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "post": { "summary": "resync or identify", "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "kind": { "type": "string", "enum": ["resync", "identify"] } } } } } },
                    "responses": { "202": { "description": "sent" }, "404": error, "409": error, "422": error } }
            },
            "/api/zones": { "get": { "summary": "Every zone", "responses": { "200": { "description": "zones" } } } },
            "/api/discovered": { "get": { "summary": "Nodes heard on mDNS (_tutti._udp), each with `linked`: joined this hub", "responses": { "200": { "description": "nodes" } } } },
            "/api/zones/{name}": {
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "put": { "summary": "Create or change a zone", "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "source": { "type": "string" }, "latency_ms": { "type": "number", "minimum": 10, "maximum": 5000 } } } } } }, "responses": { "200": { "description": "zone" }, "422": error } },
                "delete": { "summary": "Remove a zone", "responses": { "204": { "description": "removed" }, "404": error } }
            },
            "/api/events": { "get": { "summary": "WebSocket: every change as a JSON event (node_online, node_lost, node_state, node_settings, zone_changed, zone_removed)", "responses": { "101": { "description": "switching protocols" } } } },
            "/devices": { "get": { "summary": "SyncStream-style alias of /api/nodes", "responses": { "200": { "description": "nodes" } } } },
            "/grouping": { "get": { "summary": "SyncStream-style alias of /api/zones", "responses": { "200": { "description": "zones" } } } },
            "/manual-adjust": { "post": { "summary": "SyncStream-style alias of PATCH /api/nodes/{id}, with the id in the body", "responses": { "200": { "description": "applied" } } } }
        },
        "components": { "schemas": {
            "Error": { "type": "object", "properties": { "error": { "type": "string" }, "message": { "type": "string" } } },
            "SettingsPatch": { "type": "object", "additionalProperties": false, "properties": {
                "name": { "type": "string" }, "volume": { "type": "number", "minimum": 0, "maximum": 100 },
                "mute": { "type": "boolean" }, "delay_ms": { "type": "number", "minimum": -1000, "maximum": 1000 },
                "zone": { "type": "string" } } },
            "Node": { "type": "object", "properties": {
                "info": { "type": "object" }, "name": { "type": "string" }, "online": { "type": "boolean" },
                "last_seen_ms": { "type": "integer" }, "state": { "type": "object" }, "settings": { "type": "object" } } }
        } }
    })
}
