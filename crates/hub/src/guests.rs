//! Guests: phones that join the party by scanning the host's guest QR code, with nothing to
//! install. An invitation is a one-time code (memory only, [`INVITE_TTL`]); taking it makes a
//! guest: a random secret in a cookie on the phone (the hub keeps only its SHA-256), good for
//! [`GUEST_FOR`] or until the host sends the guest away. A guest listens and sings; the API and
//! the dashboard stay closed to it (its cookie is not a session).

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tutti_proto::control::{Event, GuestInvite, GuestView, to_hex};

use crate::dashboard::Tls;
use crate::{Hub, RegistryError, secrets::Guest};
use tutti_proto::crypto::constant_time_eq;

/// How long an invitation can be taken (once).
pub const INVITE_TTL: Duration = Duration::from_secs(30 * 60);
/// How long a guest stays one.
pub const GUEST_FOR: Duration = Duration::from_secs(12 * 3600);
/// Invitations kept at once (the oldest goes first).
pub const MAX_INVITES: usize = 32;
/// Guests at once: an invitation taken beyond it is refused.
pub const MAX_GUESTS: usize = 100;
/// The guest cookie's name.
pub const GUEST_COOKIE: &str = "tutti_guest";

/// Why a phone could not become a guest.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuestError {
    /// The invitation was taken already, or is too old, or never was.
    #[error("this invitation was used already or is too old: ask the host for a new guest QR code")]
    Invitation,
    /// The party is full.
    #[error("the party has {MAX_GUESTS} guests already: ask the host to send one away")]
    Full,
    /// It could not be saved.
    #[error("{0}")]
    Registry(#[from] RegistryError),
}

impl Hub {
    /// A one-time guest invitation: its link (the hub's web address, HTTPS when it serves it)
    /// and the link as a QR code with the certificate's fingerprint under it.
    pub fn invite_guest(&self) -> GuestInvite {
        let code = to_hex(&tutti_os::random::<16>());
        let now = Instant::now();
        let base = self.vault(|v| {
            v.invites.retain(|(_, until)| *until > now);
            if v.invites.len() >= MAX_INVITES {
                v.invites.remove(0);
            }
            v.invites.push((code.clone(), now + INVITE_TTL));
            v.web.clone()
        });
        let link = format!("{base}/guest?invite={code}");
        GuestInvite {
            qr_svg: self.qr_with_fingerprint(&link),
            link,
            expires_in_s: INVITE_TTL.as_secs(),
            guest_for_s: GUEST_FOR.as_secs(),
        }
    }

    /// Takes invitation `code` (once) and makes a guest: its id and the cookie's value.
    fn admit_guest(&self, code: &str) -> Result<(String, String), GuestError> {
        let now = Instant::now();
        let unix = tutti_os::unix_seconds();
        let admitted = self.vault(|v| {
            v.invites.retain(|(_, until)| *until > now);
            let found =
                v.invites.iter().position(|(c, _)| constant_time_eq(c.as_bytes(), code.as_bytes()));
            let Some(i) = found else { return Err(GuestError::Invitation) };
            v.invites.remove(i);
            let secret = to_hex(&tutti_os::random::<32>());
            let id = format!("g-{}", to_hex(&tutti_os::random::<4>()));
            let guest = Guest {
                name: String::new(),
                secret_sha256: sha256_hex(&secret),
                joined_at: unix,
                expires_at: unix + GUEST_FOR.as_secs(),
            };
            v.change(|s| {
                s.guests.retain(|_, g| g.expires_at > unix);
                if s.guests.len() >= MAX_GUESTS {
                    return Err(GuestError::Full);
                }
                let name = format!("Guest {}", s.guests.len() + 1);
                s.guests.insert(id.clone(), Guest { name, ..guest });
                Ok(())
            })??;
            Ok((id.clone(), format!("{id}.{secret}")))
        });
        if admitted.is_ok() {
            self.publish(Event::Guests { guests: self.guests() });
        }
        admitted
    }

    /// The guests now (expired ones left out).
    pub fn guests(&self) -> Vec<GuestView> {
        let unix = tutti_os::unix_seconds();
        self.vault(|v| {
            v.secrets
                .guests
                .iter()
                .filter(|(_, g)| g.expires_at > unix)
                .map(|(id, g)| GuestView {
                    id: id.clone(),
                    name: g.name.clone(),
                    joined_at: g.joined_at,
                    expires_at: g.expires_at,
                })
                .collect()
        })
    }

    /// Renames guest `id` (1–40 characters, no control characters); says what is wrong.
    pub fn rename_guest(&self, id: &str, name: &str) -> Result<(), RegistryError> {
        let name = name.trim();
        let count = name.chars().count();
        if count == 0 || count > 40 || name.chars().any(char::is_control) {
            return Err(RegistryError::Invalid {
                field: "name",
                message: format!(
                    "`{}`: a name of 1–40 characters, no control characters",
                    name.escape_debug()
                ),
            });
        }
        let found = self.vault(|v| {
            v.change(|s| s.guests.get_mut(id).map(|g| g.name = name.to_owned()).is_some())
        })?;
        if !found {
            return Err(RegistryError::Invalid {
                field: "guest",
                message: format!("no guest `{id}`"),
            });
        }
        self.publish(Event::Guests { guests: self.guests() });
        Ok(())
    }

    /// Sends guest `id` away: its cookie stops working at once. `Ok(false)`: no such guest.
    pub fn kick_guest(&self, id: &str) -> Result<bool, RegistryError> {
        let was = self.vault(|v| v.change(|s| s.guests.remove(id).is_some()))?;
        if was {
            self.publish(Event::Guests { guests: self.guests() });
        }
        Ok(was)
    }

    /// The guest a request's cookie names, if it is a live one.
    pub(crate) fn guest_of(&self, headers: &HeaderMap) -> Option<GuestView> {
        let value = cookie(headers, GUEST_COOKIE)?;
        let (id, secret) = value.split_once('.')?;
        let proof = sha256_hex(secret);
        let unix = tutti_os::unix_seconds();
        let known = self.vault(|v| {
            v.secrets
                .guests
                .get(id)
                .filter(|g| g.expires_at > unix)
                .is_some_and(|g| constant_time_eq(g.secret_sha256.as_bytes(), proof.as_bytes()))
        });
        known.then(|| self.guests().into_iter().find(|g| g.id == id)).flatten()
    }
}

fn sha256_hex(s: &str) -> String {
    to_hex(&Sha256::digest(s.as_bytes()))
}

/// A cookie's value from a request's headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
}

/// The guest page's copy of the hub's clock (before the player and the microphone).
const CLOCK_JS: &str = include_str!("web/clock.js");
/// The guest page's player (its main thread).
const LISTEN_JS: &str = include_str!("web/listen.js");
/// The guest page's player (its audio thread).
const LISTEN_WORKLET_JS: &str = include_str!("web/listen-worklet.js");

/// The guest page's microphone (its main thread).
const SING_JS: &str = include_str!("web/sing.js");
/// The guest page's microphone (its audio thread).
const SING_WORKLET_JS: &str = include_str!("web/sing-worklet.js");

fn script(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], body).into_response()
}

/// The guest pages: `/guest` (with `?invite=CODE`: taking an invitation) and `/guest/leave`.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/guest", get(page))
        .route("/guest/leave", post(leave))
        .route("/guest/name", post(rename))
        .route("/guest/listen", get(crate::listen::guest_listen))
        .route("/guest/me", get(me))
        .route("/guest/sing", get(crate::sing::guest_sing))
        .route("/guest/clock.js", get(|| async { script(CLOCK_JS) }))
        .route("/guest/sing.js", get(|| async { script(SING_JS) }))
        .route("/guest/sing-worklet.js", get(|| async { script(SING_WORKLET_JS) }))
        .route("/guest/listen.js", get(|| async { script(LISTEN_JS) }))
        .route("/guest/listen-worklet.js", get(|| async { script(LISTEN_WORKLET_JS) }))
        .layer(axum::extract::DefaultBodyLimit::max(crate::api::MAX_BODY))
        .with_state(hub)
}

#[derive(Deserialize)]
struct InviteQuery {
    invite: Option<String>,
}

async fn page(
    State(hub): State<Hub>,
    tls: Tls,
    headers: HeaderMap,
    Query(q): Query<InviteQuery>,
) -> Response {
    if let Some(code) = q.invite {
        return match hub.admit_guest(&code) {
            // Lax, not Strict: the phone's camera app opens the link from another site, and
            // the redirect that follows must carry the cookie.
            Ok((_, value)) => {
                let secure = if tls.is_some() { "; Secure" } else { "" };
                let cookie = format!(
                    "{GUEST_COOKIE}={value}; Path=/guest; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
                    GUEST_FOR.as_secs()
                );
                let mut r = Redirect::to("/guest").into_response();
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                r
            }
            Err(e @ (GuestError::Invitation | GuestError::Full)) => {
                guest_page(StatusCode::GONE, "Not a guest", &e.to_string(), "")
            }
            Err(e) => {
                guest_page(StatusCode::SERVICE_UNAVAILABLE, "Not a guest", &e.to_string(), "")
            }
        };
    }
    let Some(guest) = hub.guest_of(&headers) else {
        return not_a_guest();
    };
    let streams: String = hub
        .streams()
        .iter()
        .map(|s| {
            let track = s
                .track
                .as_ref()
                .map(|t| {
                    let title = t.title.clone().unwrap_or_else(|| t.file.clone());
                    match &t.artist {
                        Some(a) => format!("{title} — {a}"),
                        None => title,
                    }
                })
                .unwrap_or_else(|| "live".into());
            format!(
                r#"<li class="stream" data-id="{id}"><b>{name}</b> <span class="muted">{track}</span></li>"#,
                id = escape(&s.id),
                name = escape(&s.name),
                track = escape(&track),
            )
        })
        .collect();
    let streams = if streams.is_empty() {
        r#"<p class="muted" id="no-streams">Nothing is playing yet.</p>"#.to_owned()
    } else {
        format!(r#"<ul class="streams">{streams}</ul>"#)
    };
    let rooms: String = hub
        .zones()
        .iter()
        .filter(|z| z.source.is_some())
        .map(|z| format!(r#"<option value="{n}">{n}</option>"#, n = escape(&z.name)))
        .collect();
    let listen = if rooms.is_empty() {
        r#"<p class="muted" id="no-rooms">No room plays anything yet.</p>"#.to_owned()
    } else {
        format!(
            r#"<div class="row"><select id="listen-zone" aria-label="room">{rooms}</select>
<button id="listen-play" type="button">listen here</button>
<button id="listen-stop" type="button" disabled>stop</button></div>
<div class="row"><label><input id="listen-apart" type="checkbox"> apart (headphones: as early as it can, not in time with the room)</label></div>
<div class="row"><label>my delay <input id="listen-delay" type="number" step="1" min="-500" max="500" value="0"> ms (+ later, − earlier: for Bluetooth headphones)</label></div>
<p id="listen-status" data-playing="no" class="muted">Not listening.</p>
<script src="/guest/listen.js" defer></script>"#
        )
    };
    let body = format!(
        r#"<script src="/guest/clock.js" defer></script>
<p id="guest-name">You are <b>{name}</b> on {network}, until {until}.</p>
<form method="post" action="/guest/name" class="row"><input id="name" name="name" maxlength="40" value="{name}" aria-label="your name">
<button id="rename" type="submit">call me this</button></form>
<h2>Playing</h2>{streams}
<h2>Listen on this phone</h2>{listen}
<h2>Sing into the party</h2>
<div class="row"><button id="sing-start" type="button">sing</button>
<button id="sing-stop" type="button" disabled>stop</button>
<label><input id="sing-mute" type="checkbox"> mute</label>
<meter id="sing-level" min="0" max="1" value="0" aria-label="microphone level"></meter></div>
<div class="row"><label><input id="sing-ec" type="checkbox"> echo cancellation</label>
<label><input id="sing-ns" type="checkbox"> noise suppression</label>
<label><input id="sing-agc" type="checkbox"> automatic gain</label></div>
<div class="row"><label><input id="sing-hear" type="checkbox"> hear the others (on headphones: everyone sings together)</label></div>
<p id="sing-status" data-singing="no" class="muted">Not singing.</p>
<script src="/guest/sing.js" defer></script>
<form method="post" action="/guest/leave"><button id="leave" type="submit">leave the party</button></form>"#,
        name = escape(&guest.name),
        network = escape(&hub.network()),
        until = hhmm_utc(guest.expires_at),
    );
    guest_page(StatusCode::OK, "Welcome", "", &body)
}

/// The guest's own name (the host sees it; the mixer will call its microphone by it).
async fn rename(State(hub): State<Hub>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(e) = crate::api::same_origin(&headers) {
        return e.into_response();
    }
    let Some(guest) = hub.guest_of(&headers) else {
        return not_a_guest();
    };
    let name = crate::dashboard::form_field(&body, "name").unwrap_or_default();
    match hub.rename_guest(&guest.id, &name) {
        Ok(()) => Redirect::to("/guest").into_response(),
        Err(e @ RegistryError::Invalid { .. }) => {
            let back = r#"<p><a href="/guest">back</a></p>"#;
            guest_page(StatusCode::UNPROCESSABLE_ENTITY, "Your name", &e.to_string(), back)
        }
        Err(e) => guest_page(StatusCode::SERVICE_UNAVAILABLE, "Your name", &e.to_string(), ""),
    }
}

/// `GET /guest/me`: the guest its cookie names (JSON), or 401 (the guest page asks before it
/// tries to listen again).
async fn me(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    match hub.guest_of(&headers) {
        Some(g) => axum::Json(g).into_response(),
        None => not_a_guest_json().into_response(),
    }
}

/// The API-style refusal of a request without a live guest cookie (401, `not_a_guest`).
fn not_a_guest_json() -> crate::api::ApiError {
    crate::api::ApiError::new(
        StatusCode::UNAUTHORIZED,
        "not_a_guest",
        "not a guest: scan the host's guest QR code first",
    )
}

/// The guest a socket request (listen, sing) comes from: from this hub's own page, with a live
/// guest cookie; otherwise the refusal to answer with.
pub(crate) fn guest_socket(
    hub: &Hub,
    headers: &HeaderMap,
) -> Result<GuestView, crate::api::ApiError> {
    crate::api::same_origin(headers)?;
    hub.guest_of(headers).ok_or_else(not_a_guest_json)
}

async fn leave(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    if let Err(e) = crate::api::same_origin(&headers) {
        return e.into_response();
    }
    if let Some(g) = hub.guest_of(&headers)
        && let Err(e) = hub.kick_guest(&g.id)
    {
        return guest_page(StatusCode::SERVICE_UNAVAILABLE, "Still here", &e.to_string(), "");
    }
    let mut r = guest_page(StatusCode::OK, "Goodbye", "You left the party.", "");
    let clear = format!("{GUEST_COOKIE}=; Path=/guest; HttpOnly; SameSite=Lax; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `HH:MM UTC` of a Unix time.
fn hhmm_utc(unix: u64) -> String {
    format!("{:02}:{:02} UTC", unix / 3600 % 24, unix / 60 % 60)
}

/// The page a request without a live guest cookie gets.
fn not_a_guest() -> Response {
    guest_page(
        StatusCode::UNAUTHORIZED,
        "Not a guest",
        "You are not a guest here (or no longer): scan the host's guest QR code.",
        "",
    )
}

/// Text made safe inside HTML (element content and quoted attributes).
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A guest page: a heading, an error (if any), a body; phone-sized.
fn guest_page(status: StatusCode, heading: &str, error: &str, body: &str) -> Response {
    let error = escape(error);
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tutti — guest</title><style>{style}</style></head>
<body><div class="app"><header><h1>Tutti</h1></header>
<div class="card guest"><h2 id="heading">{heading}</h2>
<p class="error" id="guest-error">{error}</p>{body}</div></div></body></html>"#,
        style = tutti_ui::STYLE,
    );
    (status, Html(page)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_text_are_shown_safely() {
        assert_eq!(hhmm_utc(86_400 + 13 * 3600 + 7 * 60 + 59), "13:07 UTC");
        assert_eq!(escape(r#"<b a="x">&"#), "&lt;b a=&quot;x&quot;&gt;&amp;");
    }
}
