//! The node link, hub side: TCP, one JSON [`LinkMessage`] per line.
//!
//! ```text
//! hub  → node  {"challenge":{"nonce":"<32 random bytes, hex>"}}
//! node → hub   {"hello":{"info":{...},"proof":"<NetworkKey::prove(nonce), hex>"}}
//! hub  → node  {"welcome":{"settings":{...}}}      or {"refused":{"message":...}} and close
//! node → hub   {"state":{...}}                       a few times a second
//! hub  → node  {"command":{"kind":"volume","percent":40}}   whenever the API says so
//! ```
//!
//! Only holders of the network key get in; a proof is bound to its nonce, so one overheard
//! cannot be replayed. (The link is authenticated, not yet encrypted: settings are not
//! secret; the audio is.)

use std::io::Read;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::Hub;
use tutti_proto::control::{LinkMessage, from_hex, to_hex};

/// Longest line accepted from a node (a cover image, hex, is the longest thing it sends).
pub const MAX_LINE: usize = 1024 * 1024;

/// Accepts node links forever.
pub async fn serve(hub: Hub, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Err(e) = handle(hub, stream).await {
                eprintln!("tutti hub: node link: {e}");
            }
        });
    }
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut n)).is_err() {
        // No OS randomness: a time-based nonce still never repeats on this hub.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        n[..16].copy_from_slice(&t.to_le_bytes());
    }
    n
}

async fn send(w: &mut tokio::net::tcp::OwnedWriteHalf, m: &LinkMessage) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

async fn read_line(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut String,
) -> std::io::Result<usize> {
    line.clear();
    let n = r.read_line(line).await?;
    if line.len() > MAX_LINE {
        return Err(std::io::Error::other(format!("a line longer than {MAX_LINE} bytes")));
    }
    Ok(n)
}

async fn handle(hub: Hub, stream: TcpStream) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let challenge = nonce();
    send(&mut w, &LinkMessage::Challenge { nonce: to_hex(&challenge) }).await?;
    let mut line = String::new();
    let hello = tokio::time::timeout(Duration::from_secs(5), read_line(&mut r, &mut line)).await;
    let info = match (hello, serde_json::from_str::<LinkMessage>(line.trim())) {
        (Ok(Ok(_)), Ok(LinkMessage::Hello { info, proof })) => {
            let ok = from_hex(&proof).is_some_and(|p| hub.key().verify(&challenge, &p));
            if !ok {
                let message = "wrong network key: use the same passphrase as the hub".to_owned();
                send(&mut w, &LinkMessage::Refused { message }).await?;
                return Err(std::io::Error::other(format!("{peer}: wrong network key")));
            }
            if info.id.is_empty() || info.id.len() > 128 {
                let message = "`info.id` must be 1–128 characters".to_owned();
                send(&mut w, &LinkMessage::Refused { message }).await?;
                return Err(std::io::Error::other(format!("{peer}: bad id")));
            }
            info
        }
        _ => {
            let message = "expected {\"hello\":{...}} within 5 s".to_owned();
            send(&mut w, &LinkMessage::Refused { message }).await?;
            return Err(std::io::Error::other(format!("{peer}: no hello")));
        }
    };
    let id = info.id.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    hub.attach(&id, tx.clone());
    let (settings, route) = hub.with(|reg| {
        let (s, e) = reg.connect(info, Instant::now());
        ((s, reg.route_for(&id)), vec![e], true)
    });
    send(&mut w, &LinkMessage::Welcome { settings }).await?;
    // A player in a routed zone plays the zone's source.
    if let Some(route) = route {
        let _ = tx.send(route);
    }
    let result = loop {
        tokio::select! {
            n = read_line(&mut r, &mut line) => match n {
                Ok(0) => break Ok(()),
                // Anything but state from a node is ignored: an older or newer node may say
                // more than this hub understands.
                Ok(_) => match serde_json::from_str::<LinkMessage>(line.trim()) {
                    Ok(LinkMessage::State(state)) => {
                        hub.with(|reg| ((), reg.report(&id, state, Instant::now()).into_iter().collect(), false));
                    }
                    Ok(LinkMessage::Cover { mime, data }) => {
                        let image = from_hex(&data).filter(|d| !d.is_empty());
                        hub.set_cover(&id, image.map(|d| (mime, d)));
                    }
                    _ => {}
                },
                Err(e) => break Err(e),
            },
            c = rx.recv() => match c {
                Some(c) => {
                    if let Err(e) = send(&mut w, &LinkMessage::Command(c)).await {
                        break Err(e);
                    }
                }
                None => break Ok(()),
            },
        }
    };
    // A node that already reconnected on a new link stays online.
    if hub.detach(&id, &tx) {
        hub.with(|reg| ((), reg.disconnect(&id).into_iter().collect(), false));
    }
    result
}
