//! Guests as a phone meets them: the host's invitation (admin only), the link taken once, the
//! guest page behind its cookie, the API and the dashboard closed to that cookie, the host
//! sending the guest away (its cookie dies at once), and guests kept across a restart.

mod common;
use common::{bearer, http, raw_http};

use tutti_proto::control::{Event, GuestInvite, GuestView};

/// The `Set-Cookie` line's `name=value` of a response head.
fn set_cookie(head: &str) -> Option<String> {
    let line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))?;
    Some(line.split_once(':')?.1.trim().split(';').next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_joins_by_invitation_once_sees_only_its_page_and_leaves_when_sent_away() {
    let dir = std::env::temp_dir().join(format!("tutti-guests-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let secrets_file = Some(dir.join("secrets.json"));
    let hub = common::start(tutti_hub::HubConfig {
        secrets_file: secrets_file.clone(),
        ..common::config()
    })
    .await;
    let mut events = hub.hub.subscribe();
    // Only the admin invites.
    let read = hub.hub.api_tokens().1;
    let (s, _, _) = raw_http(hub.http, "POST /api/guests", &bearer(&read), "{}").await;
    assert_eq!(s, 403, "the read-only token may not invite");
    let (s, body) = http(hub.http, "POST", "/api/guests", Some("{}")).await;
    assert_eq!(s, 201, "{body}");
    let invite: GuestInvite = serde_json::from_str(&body).unwrap();
    assert!(invite.qr_svg.starts_with("<?xml") || invite.qr_svg.contains("<svg"), "a QR code");
    let path = invite.link.split_once(&hub.http.port().to_string()).unwrap().1.to_owned();
    assert!(path.starts_with("/guest?invite="), "{}", invite.link);
    // The phone opens the link: a guest, its cookie, and the page.
    let (s, head, _) = raw_http(hub.http, &format!("GET {path}"), "", "").await;
    assert_eq!(s, 303, "{head}");
    assert!(head.contains("HttpOnly") && head.contains("SameSite=Lax"), "{head}");
    let cookie = set_cookie(&head).expect("a guest cookie");
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let (s, _, page) = raw_http(hub.http, "GET /guest", &with_cookie, "").await;
    assert!(s == 200 && page.contains("You are <b>Guest 1</b>"), "{s} {page}");
    let guests: Vec<GuestView> =
        serde_json::from_str(&http(hub.http, "GET", "/api/guests", None).await.1).unwrap();
    assert_eq!(guests.len(), 1);
    let id = guests[0].id.clone();
    // The guest names itself (the host sees the name).
    let (s, _, _) = raw_http(hub.http, "POST /guest/name", &with_cookie, "name=Anna+K%2E").await;
    assert_eq!(s, 303);
    let (_, _, page) = raw_http(hub.http, "GET /guest", &with_cookie, "").await;
    assert!(page.contains("You are <b>Anna K.</b>"), "{page}");
    assert_eq!(hub.hub.guests()[0].name, "Anna K.");
    let long = format!("name={}", "x".repeat(41));
    for bad in ["name=", "name=+++", long.as_str()] {
        let (s, _, page) = raw_http(hub.http, "POST /guest/name", &with_cookie, bad).await;
        assert!(s == 422 && page.contains("1–40 characters"), "{bad}: {s} {page}");
    }
    let (s, _, _) = raw_http(hub.http, "POST /guest/name", "", "name=Mallory").await;
    assert_eq!(s, 401, "no cookie, no name");
    assert_eq!(hub.hub.guests()[0].name, "Anna K.");
    let joined = tokio::time::timeout(std::time::Duration::from_secs(2), events.recv()).await;
    assert!(
        matches!(&joined, Ok(Ok(Event::Guests { guests })) if guests.len() == 1),
        "dashboards hear of it: {joined:?}"
    );
    // The same link again (a screenshot of the QR passed around): refused, in words.
    let (s, head, page) = raw_http(hub.http, &format!("GET {path}"), "", "").await;
    assert!(s == 410 && page.contains("used already or is too old"), "{s} {page}");
    assert!(set_cookie(&head).is_none(), "no cookie for a used invitation");
    // The guest cookie opens neither the API nor the dashboard.
    let (s, _, _) = raw_http(hub.http, "GET /api/nodes", &with_cookie, "").await;
    assert_eq!(s, 401, "a guest cannot read the API");
    let (s, head, _) = raw_http(hub.http, "GET /", &with_cookie, "").await;
    assert!(s == 303 && head.contains("location: /login"), "{s} {head}");
    // Guests are kept across a restart (the party goes on).
    hub.stop();
    let file = secrets_file.clone().unwrap();
    let (secrets, created) = tutti_hub::secrets::Secrets::load_or_create(&file, "test").unwrap();
    assert!(!created);
    let hub =
        common::start(tutti_hub::HubConfig { secrets, secrets_file, ..common::config() }).await;
    let (s, _, page) = raw_http(hub.http, "GET /guest", &with_cookie, "").await;
    assert!(s == 200 && page.contains("Anna K."), "{s} {page}");
    // A forged cookie (the right id, another secret) is nobody.
    let forged = format!("Cookie: tutti_guest={id}.{}\r\n", "00".repeat(32));
    let (s, _, _) = raw_http(hub.http, "GET /guest", &forged, "").await;
    assert_eq!(s, 401);
    // Listening needs a live guest cookie too (the page asks /guest/me before trying again).
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let (s, _, body) =
        raw_http(hub.http, "GET /guest/listen?zone=den", &format!("{forged}{upgrade}"), "").await;
    assert!(s == 401 && body.contains("not_a_guest"), "{s} {body}");
    let (s, _, body) = raw_http(hub.http, "GET /guest/me", &with_cookie, "").await;
    assert!(s == 200 && body.contains(&id), "{s} {body}");
    let (s, _, _) = raw_http(hub.http, "GET /guest/me", &forged, "").await;
    assert_eq!(s, 401);
    // Sent away: the cookie dies at once.
    let (s, body) = http(hub.http, "DELETE", &format!("/api/guests/{id}"), None).await;
    assert_eq!(s, 200, "{body}");
    let (s, _, page) = raw_http(hub.http, "GET /guest", &with_cookie, "").await;
    assert!(s == 401 && page.contains("not a guest here"), "{s} {page}");
    let (s, _, _) = raw_http(hub.http, "GET /guest/me", &with_cookie, "").await;
    assert_eq!(s, 401, "sent away: not a guest any more");
    let (s, body) = http(hub.http, "DELETE", &format!("/api/guests/{id}"), None).await;
    assert!(s == 404 && body.contains("no guest"), "{s} {body}");
    hub.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_bounded_and_a_guest_may_leave() {
    let hub = common::start(common::config()).await;
    let first: GuestInvite =
        serde_json::from_str(&http(hub.http, "POST", "/api/guests", None).await.1).unwrap();
    for _ in 0..tutti_hub::guests::MAX_INVITES {
        let (s, _) = http(hub.http, "POST", "/api/guests", None).await;
        assert_eq!(s, 201);
    }
    // The oldest invitation made room for the newest.
    let path =
        |i: &GuestInvite| i.link.split_once(&hub.http.port().to_string()).unwrap().1.to_owned();
    let (s, _, _) = raw_http(hub.http, &format!("GET {}", path(&first)), "", "").await;
    assert_eq!(s, 410, "the oldest of {} invitations is gone", tutti_hub::guests::MAX_INVITES + 1);
    let last: GuestInvite =
        serde_json::from_str(&http(hub.http, "POST", "/api/guests", None).await.1).unwrap();
    let (_, head, _) = raw_http(hub.http, &format!("GET {}", path(&last)), "", "").await;
    let cookie = format!("Cookie: {}\r\n", set_cookie(&head).unwrap());
    // A guest leaves by itself.
    let (s, head, page) = raw_http(hub.http, "POST /guest/leave", &cookie, "").await;
    assert!(s == 200 && page.contains("You left the party"), "{s} {page}");
    assert!(head.contains("Max-Age=0"), "the cookie is cleared: {head}");
    assert!(hub.hub.guests().is_empty());
    let (s, _, _) = raw_http(hub.http, "GET /guest", &cookie, "").await;
    assert_eq!(s, 401);
    hub.stop();
}

/// The one-time login link `tutti serve` prints: it logs the dashboard in once, with a session
/// cookie a page's script cannot read (HttpOnly) and no other site can send (SameSite); the
/// same link again is refused in words; the cookie opens the dashboard and logging out ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_time_login_link_logs_in_once_with_a_strict_cookie() {
    let hub = common::start(common::config()).await;
    let code = hub.hub.login_code();
    let (s, head, _) = raw_http(hub.http, &format!("GET /login?code={code}"), "", "").await;
    assert!(s == 303 && head.contains("location: /"), "{s} {head}");
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(line.split(';').any(|f| f.trim() == flag), "{flag} in {line}");
    }
    let cookie = set_cookie(&head).unwrap();
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let (s, _, page) = raw_http(hub.http, "GET /", &with_cookie, "").await;
    assert!(s == 200 && page.contains("<div id=\"main\""), "the dashboard opens: {s} {page}");
    let (s, head, page) = raw_http(hub.http, &format!("GET /login?code={code}"), "", "").await;
    assert!(s == 401 && page.contains("used already or is too old"), "{s} {page}");
    assert!(set_cookie(&head).is_none(), "no cookie for a used link");
    let (s, _, _) = raw_http(hub.http, "GET /login?code=00112233", "", "").await;
    assert_eq!(s, 401, "a made-up code");
    let (s, head, _) = raw_http(hub.http, "POST /logout", &with_cookie, "").await;
    assert!(s == 303 && set_cookie(&head).is_some_and(|c| c.ends_with('=')), "{s} {head}");
}
