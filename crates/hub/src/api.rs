//! The HTTP + WebSocket API (JSON).
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | `/api/nodes` | every node, online or lost (`/devices` is the same list) |
//! | GET | `/api/nodes/{id}` | one node |
//! | PATCH | `/api/nodes/{id}` | `{name, volume, mute, delay_ms, zone}` (any of them); reaches the node at once (`/manual-adjust` takes the same body with an `id`) |
//! | POST | `/api/nodes/{id}/command` | `{"kind":"resync"}`, `identify`, `test_tone` (1 kHz, 2 s), `{"kind":"say","text":…}` or `say_status` (spoken, offline) (players); `start`, `pause`, `stop`, `skip` (file sources) |
//! | GET | `/api/zones` | every zone (`/grouping` is the same list) |
//! | PUT | `/api/zones/{name}` | `{source, latency_ms}`: create or change |
//! | DELETE | `/api/zones/{name}` | remove (its players stay, in no zone) |
//! | POST | `/api/zones/{name}/command` | `{"kind":"volume","percent":40}`, `mute`, `resync`, `identify` for every player of the zone (volume and mute on one stream frame: the same sample everywhere) |
//! | GET | `/api/streams` | the sources, with what they play (title, artist, position, playlist) and the zones that play them |
//! | GET | `/api/streams/{id}/cover` | the current track's cover art |
//! | GET, POST | `/sync` | SyncStream-style: every player's clock offset, skew and latency; POST `{"id"}` or `{"zone"}` (or `{}`: all) resyncs |
//! | GET | `/api/discovered` | nodes heard on mDNS (`_tutti._udp`), with whether they joined |
//! | GET | `/api/events` | WebSocket: every change, as JSON events |
//! | GET | `/api/listen?zone=NAME` | WebSocket: the room's audio, each block with the hub instant it is heard (see [`crate::listen`]) |
//! | GET | `/api/openapi.json` | this, as OpenAPI 3 |
//! | GET | `/api/health` | every node's last hour, a minute each: clock offset range, packets concealed, frames short, reports |
//! | GET | `/api/hub` | the hub: network, version, HTTPS fingerprint, MQTT, key rotation, and this token's access (`admin` or `read`) |
//! | POST | `/api/pairing` | a one-time pairing token `{ttl_s}` (default 900): its link and QR code (SVG) |
//! | GET | `/api/pairing` | paired nodes (no credentials) and revoked ids |
//! | DELETE | `/api/pairing/{id}` | revoke a paired node: its links close, the stream keys rotate |
//! | POST | `/api/keys/rotate` | rotate the stream keys now |
//! | GET | `/api/clock` | the hub's clock, µs (`{"hub_us"}`): a microphone dates its recording on it |
//! | GET | `/api/calibrations` | the calibration runs the hub remembers (the last 20) |
//! | POST | `/api/calibrations` | `{zone, apply}`: the zone's speakers play the test sequence; the answer says when, on the hub's clock, and what a recording must cover (see [`crate::calibrate`]) |
//! | GET, DELETE | `/api/calibrations/{id}` | one run; DELETE cancels it while it plays |
//! | POST | `/api/calibrations/{id}/recording?rate=HZ&start_hub_us=T` | the microphone's recording, mono 16-bit little-endian PCM (`format=f32le`: 32-bit float), its first sample captured at hub instant `T`: estimated, and the delays set |
//! | GET | `/api/nodes/{id}/calibrations` | a node's calibration history (time, measured, applied, confidence) |
//! | POST | `/api/zones/{name}/watch?rate=HZ&start_hub_us=T` | a snippet (4 s, mono PCM as for a recording) of what a microphone in the zone hears, for the drift watch (see [`crate::watch`]): the lines heard, the drift, and a calibration to record when the drift calls for one |
//! | GET | `/api/zones/{name}/watch` | the zone's last drift watch reading |
//!
//! Every request needs a token: `Authorization: Bearer TOKEN` (or `?token=TOKEN`, for a
//! browser's WebSocket). The read-only token may GET; everything else needs the admin token.
//! None or an unknown token: 401; the read-only token on a change: 403. A request whose
//! `Origin` is not this host is refused (403): a web page elsewhere cannot drive the hub
//! through a user's browser. Bodies are limited to 64 KiB (413), a calibration's recording to
//! [`MAX_RECORDING`].
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
use tutti_proto::crypto::constant_time_eq;

/// An API error: status, code, message.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String);

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError(status, code, message.into())
    }

    /// The error's code and message.
    pub fn parts(&self) -> (&'static str, &str) {
        (self.1, &self.2)
    }
}

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
            RegistryError::NotSaved(_) => {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, "not_saved", e.to_string())
            }
        }
    }
}

/// `svg` (as the `qrcode` crate draws it: `width`, `height` and `viewBox` in its first tag)
/// with `lines` of text below it, in monospace on white.
pub(crate) fn with_caption(svg: &str, lines: &[String]) -> String {
    let attr = |name: &str| -> Option<u32> {
        let start = svg.find(&format!(" {name}=\""))? + name.len() + 3;
        svg[start..].split('"').next()?.parse().ok()
    };
    let (Some(w), Some(h)) = (attr("width"), attr("height")) else { return svg.to_owned() };
    let size = (w / 30).max(6);
    let extra = (size + 4) * lines.len() as u32 + 8;
    let total = h + extra;
    let mut out = svg
        .replacen(&format!(" height=\"{h}\""), &format!(" height=\"{total}\""), 1)
        .replacen(&format!("viewBox=\"0 0 {w} {h}\""), &format!("viewBox=\"0 0 {w} {total}\""), 1);
    let Some(end) = out.rfind("</svg>") else { return svg.to_owned() };
    let mut caption =
        format!(r##"<rect x="0" y="{h}" width="{w}" height="{extra}" fill="#fff"/>"##);
    for (i, l) in lines.iter().enumerate() {
        let y = h + (size + 4) * (i as u32 + 1);
        let text = l.replace('&', "&amp;").replace('<', "&lt;");
        caption.push_str(&format!(
            r##"<text x="{x}" y="{y}" font-family="monospace" font-size="{size}" text-anchor="middle" fill="#000">{text}</text>"##,
            x = w / 2
        ));
    }
    out.insert_str(end, &caption);
    out
}

/// A JSON body that names the field and the fix when it does not parse.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            let code =
                if status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "bad_body" };
            ApiError(status, code, format!("request body: {e} (at most {MAX_BODY} bytes)"))
        })?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            ApiError(StatusCode::BAD_REQUEST, "bad_json", format!("request body: {e}"))
        })
    }
}

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Who a request's token (or a dashboard's session) says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// May change anything.
    Admin,
    /// May look.
    Read,
}

/// Which of the hub's tokens `token` is, if any (compared in constant time).
pub(crate) fn access_of(hub: &Hub, token: &str) -> Option<Access> {
    let (admin, read) = hub.api_tokens();
    if constant_time_eq(token.as_bytes(), admin.as_bytes()) {
        Some(Access::Admin)
    } else if constant_time_eq(token.as_bytes(), read.as_bytes()) {
        Some(Access::Read)
    } else {
        None
    }
}

/// Refuses a request a browser says comes from another site's page: only this host's own
/// pages may use the API (and the dashboard).
pub(crate) fn same_origin(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(axum::http::header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    if host == Some(origin_host) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!("requests from {origin} are refused: use the hub's own address"),
        ))
    }
}

/// The message a read-only login gets for a change.
pub(crate) const READ_ONLY: &str =
    "the read-only token may only GET: use the admin token to change anything";

/// Checks the token and the origin of every request.
async fn guard(
    State(hub): State<Hub>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers();
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_owned));
    let token = bearer.map(str::to_owned).or(query);
    let reads = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    // A dashboard's session cookie may read (a cover image); changes from the dashboard go
    // through its own socket, and from anywhere else need a token.
    let session =
        if reads && token.is_none() { crate::dashboard::session(&hub, headers) } else { None };
    let access = token.as_deref().and_then(|t| access_of(&hub, t)).or(session);
    let Some(access) = access else {
        let message = if token.is_none() {
            "this API needs a token: send `Authorization: Bearer TOKEN` (the admin and read-only \
             tokens are in the hub's secrets file; `tutti serve` says where)"
        } else {
            "unknown token: use the admin or read-only token from the hub's secrets file"
        };
        let mut r =
            ApiError(StatusCode::UNAUTHORIZED, "unauthorized", message.into()).into_response();
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"tutti\""),
        );
        return r;
    };
    if let Err(e) = same_origin(headers) {
        return e.into_response();
    }
    if access == Access::Read && !reads {
        return ApiError(StatusCode::FORBIDDEN, "read_only", READ_ONLY.into()).into_response();
    }
    req.extensions_mut().insert(access);
    next.run(req).await
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
        .route("/api/zones/{name}/command", post(zone_command))
        .route("/api/streams", get(streams))
        .route("/api/streams/{id}/cover", get(cover))
        .route("/sync", get(sync).post(resync))
        .route("/api/discovered", get(discovered))
        .route("/api/events", get(events))
        .route("/api/listen", get(crate::listen::api_listen))
        .route("/api/openapi.json", get(openapi))
        .route("/api/hub", get(hub_info))
        .route("/api/health", get(health))
        .route("/api/pairing", get(paired).post(new_token))
        .route("/api/pairing/{id}", axum::routing::delete(revoke))
        .route("/api/keys/rotate", post(rotate))
        .route("/api/guests", get(guests).post(invite_guest))
        .route("/api/guests/{id}", axum::routing::delete(kick_guest))
        .route("/api/clock", get(clock))
        .route("/api/calibrations", get(calibrations).post(start_calibration))
        .route("/api/calibrations/{id}", get(calibration).delete(cancel_calibration))
        .route(
            "/api/calibrations/{id}/recording",
            post(calibration_recording).layer(axum::extract::DefaultBodyLimit::max(MAX_RECORDING)),
        )
        .route("/api/nodes/{id}/calibrations", get(calibration_history))
        .route("/jsonrpc", get(crate::snapcast::websocket).post(crate::snapcast::post))
        .route(
            "/api/zones/{name}/watch",
            get(watch_view)
                .post(watch_snippet)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_RECORDING)),
        )
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource: see /api/openapi.json".into(),
            )
        })
        .layer(axum::middleware::from_fn_with_state(hub.clone(), guard))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(hub)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    ttl_s: Option<u64>,
}

async fn new_token(State(hub): State<Hub>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(StatusCode::BAD_REQUEST, "bad_json", format!("request body: {e}"))
        })?
    };
    let ttl = req.ttl_s.unwrap_or(900);
    if !(10..=7 * 86_400).contains(&ttl) {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("`ttl_s` = {ttl}: a token lives 10 s to 7 days"),
        ));
    }
    Ok((StatusCode::CREATED, Json(hub.pairing_offer(ttl))).into_response())
}

async fn paired(State(hub): State<Hub>) -> impl IntoResponse {
    let (_, revoked) = hub.paired();
    let nodes = hub.paired_views();
    let revoked: Vec<_> =
        revoked.into_iter().map(|(id, at)| json!({"id": id, "revoked_at": at})).collect();
    Json(json!({ "nodes": nodes, "revoked": revoked, "rotating": hub.rotating() }))
}

async fn revoke(State(hub): State<Hub>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if hub.revoke(&id)? {
        Ok(Json(json!({"revoked": id, "keys": "rotating"})).into_response())
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "not_paired", format!("no paired node `{id}`")))
    }
}

impl From<crate::calibrate::CalibrationError> for ApiError {
    fn from(e: crate::calibrate::CalibrationError) -> Self {
        use crate::calibrate::CalibrationError as E;
        let status = match &e {
            E::Registry(r) => return r.clone().into(),
            E::NoRun(_) => StatusCode::NOT_FOUND,
            E::TooFew { .. } | E::Silent(_) | E::Busy { .. } | E::NotWaiting { .. } => {
                StatusCode::CONFLICT
            }
            E::Recording(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Offline(_) => StatusCode::CONFLICT,
        };
        ApiError(status, e.code(), e.to_string())
    }
}

/// The largest calibration recording accepted: 200 s of 48 kHz 32-bit mono (a sequence for
/// 32 speakers is 100 s).
pub const MAX_RECORDING: usize = 200 * 48_000 * 4;

async fn clock() -> impl IntoResponse {
    Json(json!({ "hub_us": tutti_audio::clock::now().0 as f64 / 1e3 }))
}

async fn calibrations(State(hub): State<Hub>) -> impl IntoResponse {
    Json(hub.calibrations())
}

async fn calibration(State(hub): State<Hub>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(hub.calibration(&id)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalibrationRequest {
    zone: String,
    #[serde(default = "yes")]
    apply: bool,
}

fn yes() -> bool {
    true
}

async fn start_calibration(
    State(hub): State<Hub>,
    Body(req): Body<CalibrationRequest>,
) -> Result<Response, ApiError> {
    Ok((StatusCode::CREATED, Json(hub.start_calibration(&req.zone, req.apply)?)).into_response())
}

async fn cancel_calibration(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(hub.cancel_calibration(&id)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordingQuery {
    rate: f64,
    start_hub_us: f64,
    #[serde(default)]
    format: Option<String>,
}

async fn calibration_recording(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<RecordingQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let (q, samples) = upload(query, body, "recording")?;
    let view = tokio::task::spawn_blocking(move || {
        hub.calibration_recording(&id, q.rate, q.start_hub_us, &samples)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(view).into_response())
}

/// A microphone's upload (`what`: a recording, a snippet): its query and its samples, or
/// what is wrong with them.
fn upload(
    query: Result<axum::extract::Query<RecordingQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    what: &str,
) -> Result<(RecordingQuery, Vec<f32>), ApiError> {
    let axum::extract::Query(q) = query.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!(
                "{e}: say `?rate=48000&start_hub_us=T` (the {what}'s sample rate, and the hub \
                 instant its first sample was captured, µs)"
            ),
        )
    })?;
    let body = body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "bad_body" };
        ApiError(status, code, format!("{what}: {e} (at most {MAX_RECORDING} bytes)"))
    })?;
    let samples = decode_recording(q.format.as_deref(), &body)?;
    Ok((q, samples))
}

/// A microphone's mono PCM body: s16le (the default) or f32le.
fn decode_recording(format: Option<&str>, body: &[u8]) -> Result<Vec<f32>, ApiError> {
    Ok(match format.unwrap_or("s16le") {
        "s16le" if body.len().is_multiple_of(2) => body
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
            .collect(),
        "f32le" if body.len().is_multiple_of(4) => {
            body.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        f @ ("s16le" | "f32le") => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_recording",
                format!("{} bytes is not a whole number of {f} samples", body.len()),
            ));
        }
        other => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_recording",
                format!("`format` = {other}: use s16le (the default) or f32le, mono"),
            ));
        }
    })
}

async fn watch_snippet(
    State(hub): State<Hub>,
    Path(zone): Path<String>,
    query: Result<axum::extract::Query<RecordingQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let (q, samples) = upload(query, body, "snippet")?;
    Ok(Json(hub.watch_snippet(&zone, q.rate, q.start_hub_us, samples).await?).into_response())
}

async fn watch_view(
    State(hub): State<Hub>,
    Path(zone): Path<String>,
) -> Result<Response, ApiError> {
    match hub.watch_view(&zone) {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            "not_watched",
            format!(
                "zone `{zone}` is not watched: run `tutti calibrate --zone {zone} --watch` with a \
                 microphone there"
            ),
        )),
    }
}

async fn calibration_history(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let history = hub.with(|r| (r.calibration_history(&id), vec![], false))?;
    Ok(Json(history).into_response())
}

async fn guests(State(hub): State<Hub>) -> impl IntoResponse {
    Json(hub.guests())
}

async fn invite_guest(State(hub): State<Hub>) -> impl IntoResponse {
    (StatusCode::CREATED, Json(hub.invite_guest()))
}

async fn kick_guest(State(hub): State<Hub>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if hub.kick_guest(&id)? {
        Ok(Json(json!({"kicked": id})).into_response())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            "no_guest",
            format!("no guest `{id}`: GET /api/guests lists them"),
        ))
    }
}

async fn rotate(State(hub): State<Hub>) -> Result<impl IntoResponse, ApiError> {
    let n = hub.rotate_keys()?;
    Ok(Json(
        json!({"rotation": n, "promote_s": crate::KEY_PROMOTE.as_secs(), "retire_s": crate::KEY_RETIRE.as_secs()}),
    ))
}

async fn nodes(State(hub): State<Hub>) -> impl IntoResponse {
    Json(hub.nodes())
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

async fn zone_command(
    State(hub): State<Hub>,
    Path(name): Path<String>,
    Body(c): Body<Command>,
) -> Result<Response, ApiError> {
    let reached = hub.zone_act(&name, &c)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "sent": reached }))).into_response())
}

async fn streams(State(hub): State<Hub>) -> impl IntoResponse {
    Json(hub.streams())
}

async fn cover(State(hub): State<Hub>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (mime, bytes) = hub.cover(&id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "no_cover",
            format!("source `{id}` has sent no cover art for its current track"),
        )
    })?;
    Ok(([(axum::http::header::CONTENT_TYPE, mime)], bytes).into_response())
}

async fn sync(State(hub): State<Hub>) -> impl IntoResponse {
    let nodes = hub.nodes();
    let players: Vec<serde_json::Value> = nodes
        .into_iter()
        .filter(|n| n.info.role == "player")
        .map(|n| {
            json!({
                "id": n.info.id, "name": n.name, "online": n.online, "zone": n.settings.zone,
                "streaming": n.state.streaming, "offset_us": n.state.offset_us,
                "skew_ppm": n.state.skew_ppm, "latency_ms": n.state.latency_ms,
                "jitter_ms": n.state.jitter_ms, "delay_ms": n.settings.delay_ms,
            })
        })
        .collect();
    Json(json!({ "players": players }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResyncBody {
    id: Option<String>,
    zone: Option<String>,
}

async fn resync(State(hub): State<Hub>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let b: ResyncBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResyncBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(StatusCode::BAD_REQUEST, "bad_json", format!("request body: {e}"))
        })?
    };
    let sent = match (b.id, b.zone) {
        (Some(id), _) => {
            hub.act(&id, Command::Resync)?;
            1
        }
        (None, Some(zone)) => hub.zone_act(&zone, &Command::Resync)?,
        (None, None) => {
            let ids: Vec<String> = hub.with(|r| {
                let ids = r
                    .nodes(Instant::now())
                    .into_iter()
                    .filter(|n| n.online && n.info.capabilities.iter().any(|c| c == "resync"));
                (ids.map(|n| n.info.id).collect(), vec![], false)
            });
            ids.iter().filter(|id| hub.command(id, vec![Command::Resync])).count()
        }
    };
    Ok((StatusCode::ACCEPTED, Json(json!({ "sent": sent }))).into_response())
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
    Json(hub.zones())
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
    Ok(Json(hub.put_zone(Zone { name, source: z.source, latency_ms: z.latency_ms })?))
}

async fn delete_zone(
    State(hub): State<Hub>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    hub.delete_zone(&name)?;
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

async fn hub_info(
    State(hub): State<Hub>,
    axum::Extension(access): axum::Extension<Access>,
) -> impl IntoResponse {
    let mut status = json!(hub.status());
    status["access"] = json!(if access == Access::Admin { "admin" } else { "read" });
    Json(status)
}

async fn health(State(hub): State<Hub>) -> impl IntoResponse {
    Json(hub.health())
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
        "security": [{ "bearer": [] }, { "query": [] }],
        "paths": {
            "/jsonrpc": {
                "get": { "summary": "Snapcast's JSON-RPC control API on a WebSocket: requests answered, changes made elsewhere notified (crate::snapcast)", "responses": { "101": { "description": "upgraded" } } },
                "post": { "summary": "One Snapcast JSON-RPC request or batch (Server.GetStatus, Client.SetVolume, Group.SetStream, ...), answered", "responses": { "200": { "description": "the JSON-RPC response" }, "204": { "description": "notifications only: nothing to answer" } } }
            },
            "/api/health": { "get": { "summary": "Every node's last hour of reports, a minute each (ago_min, offset_min_us, offset_max_us, jitter_max_ms, concealed, underruns, reports), by id", "responses": { "200": { "description": "health" } } } },
            "/api/hub": { "get": { "summary": "The hub: network name, version, HTTPS certificate fingerprint, MQTT broker, whether keys are rotating and the sending key's age, mDNS discovery (off, on with the nodes heard, or failed and why), and the access of the token asking (admin or read)", "responses": { "200": { "description": "the hub" } } } },
            "/api/pairing": {
                "get": { "summary": "Paired nodes (no credentials), revoked ids, whether a key rotation is under way", "responses": { "200": { "description": "pairing" } } },
                "post": { "summary": "A one-time pairing token: link (tutti://HOST:PORT/pair/ID.SECRET), QR code (SVG), expiry",
                    "requestBody": { "required": false, "content": { "application/json": { "schema": { "type": "object", "properties": { "ttl_s": { "type": "integer", "minimum": 10, "maximum": 604800, "default": 900 } } } } } },
                    "responses": { "201": { "description": "token" }, "400": error, "403": error, "422": error } }
            },
            "/api/pairing/{id}": {
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "delete": { "summary": "Revoke a paired node: its links close, the stream keys rotate without it", "responses": { "200": { "description": "revoked" }, "403": error, "404": error } }
            },
            "/api/guests": {
                "get": { "summary": "The guests (phones that took a guest invitation): id, name, joined_at, expires_at", "responses": { "200": { "description": "guests" } } },
                "post": { "summary": "A one-time guest invitation: the link a phone opens (/guest?invite=CODE, HTTPS when served), its QR code with the certificate's fingerprint; taken once within 30 min, the guest stays one for 12 h", "responses": { "201": { "description": "the invitation" }, "403": error }
                }
            },
            "/api/guests/{id}": { "delete": { "summary": "Send a guest away: its credential stops working at once", "responses": { "200": { "description": "kicked" }, "404": error, "403": error } } },
            "/api/clock": { "get": { "summary": "The hub's clock now, µs ({\"hub_us\"}): a microphone dates its calibration recording on it", "responses": { "200": { "description": "the clock" } } } },
            "/api/calibrations": {
                "get": { "summary": "The calibration runs the hub remembers (the last 20): zone, state, each speaker's arrival, confidence and delay", "responses": { "200": { "description": "runs" } } },
                "post": { "summary": "Calibrate a zone: its speakers play the test sequence on one stream frame; the answer says when on the hub's clock and what a microphone must record",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["zone"], "properties": { "zone": { "type": "string" }, "apply": { "type": "boolean", "default": true } } } } } },
                    "responses": { "201": { "description": "playing" }, "400": error, "403": error, "404": error, "409": error } }
            },
            "/api/calibrations/{id}": {
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "get": { "summary": "One calibration run", "responses": { "200": { "description": "the run" }, "404": error } },
                "delete": { "summary": "Cancel a run that plays: the speakers stop the sequence, nothing changes", "responses": { "200": { "description": "cancelled" }, "403": error, "404": error, "409": error } }
            },
            "/api/calibrations/{id}/recording": {
                "parameters": [
                    { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "rate", "in": "query", "required": true, "schema": { "type": "number" } },
                    { "name": "start_hub_us", "in": "query", "required": true, "schema": { "type": "number" } },
                    { "name": "format", "in": "query", "required": false, "schema": { "type": "string", "enum": ["s16le", "f32le"], "default": "s16le" } }
                ],
                "post": { "summary": "The microphone's recording (mono PCM), its first sample captured at hub instant start_hub_us: estimated, and the delays set",
                    "requestBody": { "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                    "responses": { "200": { "description": "the run, done" }, "400": error, "403": error, "404": error, "409": error, "413": error, "422": error } }
            },
            "/api/zones/{name}/watch": {
                "parameters": [
                    { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "rate", "in": "query", "required": false, "schema": { "type": "number" } },
                    { "name": "start_hub_us", "in": "query", "required": false, "schema": { "type": "number" } },
                    { "name": "format", "in": "query", "required": false, "schema": { "type": "string", "enum": ["s16le", "f32le"], "default": "s16le" } }
                ],
                "get": { "summary": "The zone's last drift watch reading", "responses": { "200": { "description": "reading" }, "404": error } },
                "post": { "summary": "A 4 s snippet of what a microphone in the zone hears (rate and start_hub_us required): the arrivals of the program heard, the drift against the baseline, and a calibration to record when the drift calls for one",
                    "requestBody": { "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                    "responses": { "200": { "description": "the reading" }, "400": error, "403": error, "404": error, "409": error, "413": error, "422": error } }
            },
            "/api/nodes/{id}/calibrations": {
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "get": { "summary": "A node's calibration history, oldest first: time, run, measured arrival, delay before and set, confidence", "responses": { "200": { "description": "history" }, "404": error } }
            },
            "/api/keys/rotate": { "post": { "summary": "Rotate the stream keys now (accept new, then send with it, then retire the old)", "responses": { "200": { "description": "rotating" }, "403": error } } },
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
                "post": { "summary": "resync, identify, test_tone, say {text} or say_status (players: the last three over the stream, the status spoken by espeak-ng on the node); start, pause, stop or skip (file sources)", "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Command" } } } },
                    "responses": { "202": { "description": "sent" }, "404": error, "409": error, "422": error } }
            },
            "/api/zones/{name}/command": {
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "post": { "summary": "volume, mute (on one stream frame: the same sample on every player), resync or identify, for every player of the zone",
                    "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Command" } } } },
                    "responses": { "202": { "description": "sent: how many players" }, "404": error, "422": error } }
            },
            "/api/streams": { "get": { "summary": "The sources: address, current track (title, artist, album, elapsed, duration, playlist position, transport), players, the zones that play them, the controls they take", "responses": { "200": { "description": "streams" } } } },
            "/api/streams/{id}/cover": {
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "get": { "summary": "Cover art of the source's current track", "responses": { "200": { "description": "the image" }, "404": error } }
            },
            "/sync": {
                "get": { "summary": "SyncStream-style: every player's clock offset, skew, latency, delay", "responses": { "200": { "description": "players" } } },
                "post": { "summary": "SyncStream-style resync: {\"id\"} one player, {\"zone\"} a zone, {} every player", "responses": { "202": { "description": "sent" }, "404": error } }
            },
            "/api/zones": { "get": { "summary": "Every zone", "responses": { "200": { "description": "zones" } } } },
            "/api/discovered": { "get": { "summary": "Nodes heard on mDNS (_tutti._udp), each with `linked`: joined this hub", "responses": { "200": { "description": "nodes" } } } },
            "/api/zones/{name}": {
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "put": { "summary": "Create or change a zone", "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "source": { "type": "string" }, "latency_ms": { "type": "number", "minimum": 10, "maximum": 5000 } } } } } }, "responses": { "200": { "description": "zone" }, "422": error } },
                "delete": { "summary": "Remove a zone", "responses": { "204": { "description": "removed" }, "404": error } }
            },
            "/api/listen": { "get": { "summary": "WebSocket: a room's audio (?zone=NAME), each block with the hub instant it is heard; pings answered with the hub's clock", "responses": { "101": { "description": "switching protocols" } } } },
            "/api/events": { "get": { "summary": "WebSocket: every change as a JSON event (node_online, node_lost, node_state, node_settings, zone_changed, zone_removed)", "responses": { "101": { "description": "switching protocols" } } } },
            "/devices": { "get": { "summary": "SyncStream-style alias of /api/nodes", "responses": { "200": { "description": "nodes" } } } },
            "/grouping": { "get": { "summary": "SyncStream-style alias of /api/zones", "responses": { "200": { "description": "zones" } } } },
            "/manual-adjust": { "post": { "summary": "SyncStream-style alias of PATCH /api/nodes/{id}, with the id in the body", "responses": { "200": { "description": "applied" } } } }
        },
        "components": {
          "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer", "description": "the admin token (everything) or the read-only token (GET only), from the hub's secrets file" },
            "query": { "type": "apiKey", "in": "query", "name": "token", "description": "the same token as ?token= (browsers' WebSockets)" }
          },
          "schemas": {
            "Command": { "type": "object", "required": ["kind"], "properties": {
                "kind": { "type": "string", "enum": ["volume", "mute", "resync", "identify", "start", "pause", "stop", "skip"] },
                "percent": { "type": "number", "minimum": 0, "maximum": 100 }, "mute": { "type": "boolean" } } },
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
