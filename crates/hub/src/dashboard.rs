//! The web dashboard: `tutti-ui`'s components served by the hub with dioxus liveview.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | `/` | the dashboard (a session) or the way to the login page |
//! | GET | `/login` | the login page; `?code=CODE` (the one-time link `tutti serve` prints) logs in as admin |
//! | POST | `/login` | `token=TOKEN` (form): the admin token logs in to change, the read-only token to look |
//! | POST | `/logout` | ends the session in this browser |
//! | GET | `/ui/ws` | the dashboard's WebSocket: the components run here, the page draws them |
//!
//! A login is a cookie (`HttpOnly`, `SameSite=Strict`, 30 days) that names its access and
//! expiry and carries a MAC keyed by both API tokens: the hub keeps no session table, a restart
//! keeps everyone logged in, and changing a token logs every browser out. A read-only session
//! sees everything, its controls are disabled, and the backend refuses its changes anyway.

use std::rc::Rc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use tutti_ui::{Action, Backend, Change, Done, Snapshot, UiError};

use crate::Hub;
use crate::api::{Access, ApiError, READ_ONLY, access_of, same_origin};
use tutti_proto::control::to_hex;
use tutti_proto::crypto::{constant_time_eq, session_mac};

/// The session cookie's name.
pub const COOKIE: &str = "tutti_session";
/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
/// How long a one-time login link works.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(15 * 60);
/// At most this many one-time login links wait at once (the oldest goes first).
const MAX_LOGIN_CODES: usize = 8;

/// The dashboard's routes (the API's are [`crate::api::router`]).
pub fn router(hub: Hub) -> Router {
    let pool = dioxus_liveview::LiveViewPool::new();
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route(
            "/ui/ws",
            get(move |State(hub): State<Hub>, headers: HeaderMap, ws: WebSocketUpgrade| {
                let pool = pool.clone();
                async move { socket(hub, headers, ws, pool) }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(crate::api::MAX_BODY))
        .with_state(hub)
}

impl Hub {
    /// A one-time link's code that logs a browser in as admin (`/login?code=CODE`), valid for
    /// [`LOGIN_CODE_TTL`].
    pub fn login_code(&self) -> String {
        let code = to_hex(&tutti_os::random::<16>());
        let now = Instant::now();
        self.vault(|v| {
            v.logins.retain(|(_, until)| *until > now);
            if v.logins.len() >= MAX_LOGIN_CODES {
                v.logins.remove(0);
            }
            v.logins.push((code.clone(), now + LOGIN_CODE_TTL));
        });
        code
    }

    /// Takes a one-time login code: true once, if it is live.
    fn take_login_code(&self, code: &str) -> bool {
        let now = Instant::now();
        self.vault(|v| {
            v.logins.retain(|(_, until)| *until > now);
            let found =
                v.logins.iter().position(|(c, _)| constant_time_eq(c.as_bytes(), code.as_bytes()));
            found.map(|i| v.logins.remove(i)).is_some()
        })
    }

    /// The session cookie's value for `access`, good until `expires` (Unix seconds).
    fn session_value(&self, access: Access, expires: u64) -> String {
        let letter = if access == Access::Admin { 'a' } else { 'r' };
        format!("{letter}.{expires}.{}", to_hex(&self.session_proof(letter, expires)))
    }

    fn session_proof(&self, letter: char, expires: u64) -> [u8; 32] {
        let (admin, read) = self.api_tokens();
        let secret = format!("{admin}\n{read}");
        session_mac(secret.as_bytes(), format!("dashboard {letter} {expires}").as_bytes())
    }
}

/// The access a request's session cookie gives, if it carries a good one.
pub(crate) fn session(hub: &Hub, headers: &HeaderMap) -> Option<Access> {
    let value = crate::guests::cookie(headers, COOKIE)?;
    let mut parts = value.splitn(3, '.');
    let (letter, expires, mac) = (parts.next()?, parts.next()?, parts.next()?);
    let access = match letter {
        "a" => Access::Admin,
        "r" => Access::Read,
        _ => return None,
    };
    let expires: u64 = expires.parse().ok()?;
    if expires <= tutti_os::unix_seconds() {
        return None;
    }
    let letter = letter.chars().next()?;
    let proof = to_hex(&hub.session_proof(letter, expires));
    constant_time_eq(proof.as_bytes(), mac.as_bytes()).then_some(access)
}

/// Marks the requests that came over the hub's HTTPS listener: a login there sets a `Secure`
/// cookie (a browser never sends it over plain HTTP).
#[derive(Clone, Copy, Debug)]
pub struct OverTls;

/// Whether the request came over HTTPS.
pub(crate) type Tls = Option<axum::Extension<OverTls>>;

/// A redirect that sets (or, with `None`, clears) the session cookie (`Secure` over HTTPS).
fn with_session(hub: &Hub, access: Option<Access>, to: &str, tls: Tls) -> Response {
    let secure = if tls.is_some() { "; Secure" } else { "" };
    let cookie = match access {
        Some(a) => {
            let expires = tutti_os::unix_seconds() + SESSION_LIFETIME.as_secs();
            format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                hub.session_value(a, expires),
                SESSION_LIFETIME.as_secs()
            )
        }
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    let mut r = Redirect::to(to).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The dashboard's page: the style, an empty root, and the script that connects it to
/// [`socket`].
async fn index(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    if session(&hub, &headers).is_none() {
        return Redirect::to("/login").into_response();
    }
    let glue = dioxus_liveview::interpreter_glue("/ui/ws");
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tutti</title><style>{style}</style></head>
<body><div id="main"></div>
<div id="lost" class="trouble" hidden>The connection to the hub is lost: reconnecting…</div>
<form method="post" action="/logout" class="logout"><button class="small">log out</button></form>
{glue}
<script>
  // The page is drawn by the hub: when its socket closes (a hub restart, a sleeping laptop),
  // say so and load the page again (the login stays).
  if (window.ipc) {{
    window.ipc.ws.addEventListener("close", () => {{
      document.getElementById("lost").hidden = false;
      setTimeout(() => location.reload(), 2000);
    }});
  }}
</script>
</body></html>"#,
        style = tutti_ui::STYLE,
    );
    let mut r = Html(page).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

/// The login page, or (with a live one-time `code`) an admin login.
async fn login_page(State(hub): State<Hub>, tls: Tls, Query(q): Query<LoginQuery>) -> Response {
    match q.code {
        Some(code) if hub.take_login_code(&code) => {
            with_session(&hub, Some(Access::Admin), "/", tls)
        }
        Some(_) => login_form(
            StatusCode::UNAUTHORIZED,
            "That login link was used already or is too old: ask `tutti serve` for a new one \
             (it prints one at start), or paste a token.",
        ),
        None => login_form(StatusCode::OK, ""),
    }
}

fn login_form(status: StatusCode, error: &str) -> Response {
    let error = crate::guests::escape(error);
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tutti — log in</title><style>{style}</style></head>
<body><div class="app"><header><h1>Tutti</h1></header>
<form method="post" action="/login" class="card login">
<h2>Log in</h2>
<p class="muted">Paste the hub's admin token (to change things) or its read-only token (to look).
They are in the hub's secrets file; <code>tutti serve</code> says where, and prints a one-time
login link at start.</p>
<label class="row"><input id="token" name="token" type="password" autocomplete="current-password" placeholder="admin-… or read-…" required></label>
<p class="error" id="login-error">{error}</p>
<button id="login" type="submit">log in</button>
</form></div></body></html>"#,
        style = tutti_ui::STYLE,
    );
    (status, Html(page)).into_response()
}

/// `token=…` from a form body.
fn form_token(body: &[u8]) -> Option<String> {
    form_field(body, "token")
}

/// Field `key` of a form body (`application/x-www-form-urlencoded`), decoded and trimmed.
pub(crate) fn form_field(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let raw = text.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?;
    let mut out = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(|s| s.trim().to_owned())
}

async fn login(
    State(hub): State<Hub>,
    tls: Tls,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = same_origin(&headers) {
        return e.into_response();
    }
    match form_token(&body).as_deref().and_then(|t| access_of(&hub, t)) {
        Some(access) => with_session(&hub, Some(access), "/", tls),
        None => login_form(
            StatusCode::UNAUTHORIZED,
            "Unknown token: use the admin or read-only token from the hub's secrets file.",
        ),
    }
}

async fn logout(State(hub): State<Hub>, tls: Tls, headers: HeaderMap) -> Response {
    if let Err(e) = same_origin(&headers) {
        return e.into_response();
    }
    with_session(&hub, None, "/login", tls)
}

/// The dashboard's socket: a session, from this host's own page.
fn socket(
    hub: Hub,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
    pool: dioxus_liveview::LiveViewPool,
) -> Response {
    if let Err(e) = same_origin(&headers) {
        return e.into_response();
    }
    let Some(access) = session(&hub, &headers) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in first: open the hub's address in a browser",
        )
        .into_response();
    };
    ws.on_upgrade(move |socket| async move {
        let _ = pool
            .launch_virtualdom(dioxus_liveview::axum_socket(socket), move || {
                let backend: tutti_ui::SharedBackend = Rc::new(HubBackend { hub, access });
                dioxus::prelude::VirtualDom::new_with_props(
                    tutti_ui::App,
                    tutti_ui::AppProps { backend },
                )
            })
            .await;
    })
}

/// The dashboard's backend in the hub itself: the same calls the API makes.
struct HubBackend {
    hub: Hub,
    access: Access,
}

fn ui_error(e: impl Into<ApiError>) -> UiError {
    let e: ApiError = e.into();
    let (code, message) = e.parts();
    UiError { code: code.to_owned(), message: message.to_owned() }
}

impl Backend for HubBackend {
    fn snapshot(&self) -> futures_util::future::LocalBoxFuture<'static, Result<Snapshot, UiError>> {
        let hub = self.hub.clone();
        async move {
            Ok(Snapshot {
                nodes: hub.nodes(),
                zones: hub.zones(),
                paired: hub.paired_views(),
                guests: hub.guests(),
                hub: hub.status(),
            })
        }
        .boxed_local()
    }

    fn changes(&self) -> futures_util::stream::LocalBoxStream<'static, Change> {
        use tokio::sync::broadcast::error::RecvError;
        let events = futures_util::stream::unfold(self.hub.subscribe_changes(), |mut rx| async {
            match rx.recv().await {
                Ok(e) => Some((Change::Event(e), rx)),
                Err(RecvError::Lagged(_)) => Some((Change::Lagged, rx)),
                Err(RecvError::Closed) => None,
            }
        });
        // The nodes' reports, read from the registry at the page's pace: a page wakes once a
        // period, not for each of fifty nodes' reports.
        let reports = futures_util::stream::unfold(self.hub.clone(), |hub| async {
            tokio::time::sleep(tutti_ui::REPORTS_EVERY).await;
            let states = hub.nodes().into_iter().map(|n| (n.info.id, n.state)).collect();
            Some((Change::Reports(states), hub))
        });
        futures_util::stream::select(events, reports).boxed_local()
    }

    fn perform(
        &self,
        action: Action,
    ) -> futures_util::future::LocalBoxFuture<'static, Result<Done, UiError>> {
        let hub = self.hub.clone();
        let access = self.access;
        async move {
            if access != Access::Admin {
                return Err(UiError { code: "read_only".into(), message: READ_ONLY.into() });
            }
            match action {
                Action::Patch { id, patch } => {
                    let (view, delivered) = hub.apply(&id, patch).map_err(ui_error)?;
                    Ok(if view.online && delivered { Done::Ok } else { Done::Saved })
                }
                Action::Command { id, command } => {
                    hub.act(&id, command).map_err(ui_error)?;
                    Ok(Done::Ok)
                }
                Action::PutZone(zone) => {
                    hub.put_zone(zone).map_err(ui_error)?;
                    Ok(Done::Ok)
                }
                Action::DeleteZone(name) => {
                    hub.delete_zone(&name).map_err(ui_error)?;
                    Ok(Done::Ok)
                }
                Action::ZoneCommand { name, command } => {
                    hub.zone_act(&name, &command).map_err(ui_error)?;
                    Ok(Done::Ok)
                }
                Action::Pair => Ok(Done::Pairing(hub.pairing_offer(crate::TOKEN_TTL.as_secs()))),
                Action::Revoke(id) => match hub.revoke(&id).map_err(ui_error)? {
                    true => Ok(Done::Ok),
                    false => Err(UiError {
                        code: "not_paired".into(),
                        message: format!("no paired node `{id}`"),
                    }),
                },
                Action::InviteGuest => Ok(Done::Invite(hub.invite_guest())),
                Action::Kick(id) => match hub.kick_guest(&id).map_err(ui_error)? {
                    true => Ok(Done::Ok),
                    false => Err(UiError {
                        code: "no_guest".into(),
                        message: format!("no guest `{id}`: GET /api/guests lists them"),
                    }),
                },
            }
        }
        .boxed_local()
    }

    fn health(
        &self,
    ) -> futures_util::future::LocalBoxFuture<
        'static,
        Result<
            std::collections::BTreeMap<String, Vec<tutti_proto::control::HealthMinute>>,
            UiError,
        >,
    > {
        let hub = self.hub.clone();
        async move { Ok(hub.health()) }.boxed_local()
    }

    fn read_only(&self) -> bool {
        self.access != Access::Admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_token_is_decoded_and_junk_is_not_a_token() {
        assert_eq!(form_token(b"token=admin-ab12").as_deref(), Some("admin-ab12"));
        assert_eq!(form_token(b"x=1&token=read-%41%42+").as_deref(), Some("read-AB"));
        assert_eq!(form_token(b"token=%4"), None);
        assert_eq!(form_token(b"token=%zz"), None);
        assert_eq!(form_token(b"nothing"), None);
        assert_eq!(form_token(&[0xff, 0xfe]), None);
    }

    #[test]
    fn a_read_only_page_changes_nothing_whatever_it_sends() {
        // The page disables its controls for a read-only login; a page that sends anyway (an
        // old tab, a hand-made message) is refused here, in the API's words, and the hub is
        // as it was.
        let hub =
            Hub::new(None, None, crate::secrets::Secrets::generate("test"), None).expect("a hub");
        let zone =
            tutti_proto::control::Zone { name: "kitchen".into(), source: None, latency_ms: None };
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let run = |access: Access, action: Action| {
            let backend = HubBackend { hub: hub.clone(), access };
            runtime.block_on(backend.perform(action))
        };
        let actions = [
            Action::PutZone(zone.clone()),
            Action::DeleteZone("kitchen".into()),
            Action::Pair,
            Action::Revoke("node-1".into()),
        ];
        for action in actions {
            let what = format!("{action:?}");
            let refused = run(Access::Read, action).expect_err(&what);
            assert_eq!(refused.code, "read_only", "{what}");
            assert_eq!(refused.message, READ_ONLY, "{what}");
        }
        assert!(hub.zones().is_empty(), "{:?}", hub.zones());
        // The same message from an admin's page does change it.
        run(Access::Admin, Action::PutZone(zone)).expect("an admin's zone");
        assert_eq!(hub.zones().len(), 1);
    }
}
