//! `tutti-gui`: Tutti's desktop app. The dashboard the hub serves at `/` (the same dioxus
//! components, `tutti-ui`), in a window of its own, driving a hub over its HTTP + WebSocket API
//! with the admin (or read-only) token.
//!
//! ```text
//! tutti-gui --hub http://127.0.0.1:7480 --token "$(jq -r .admin_token ~/.local/state/tutti/secrets.json)"
//! tutti-gui --hub https://livingroom:7443 --fingerprint AB:CD:… --token …
//! tutti-gui --token …     # the one hub mDNS finds on the network, over HTTPS
//! ```

#![forbid(unsafe_code)]

mod client;
mod tls;

use std::rc::Rc;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use dioxus::prelude::*;

use crate::client::HubClient;

/// Tutti's desktop app: every speaker, room, stream and pairing of a hub.
#[derive(Parser, Debug, Clone)]
#[command(name = "tutti-gui", version)]
struct Args {
    /// The hub's API: `https://HOST:PORT` with --fingerprint, or `http://HOST:PORT` (the hub's
    /// own machine or a trusted link); `tutti serve` prints both. Without it: the hub mDNS
    /// finds on this network (one; `tutti hubs` lists them).
    #[arg(long, env = "TUTTI_HUB_URL")]
    hub: Option<String>,
    /// The SHA-256 of the hub's HTTPS certificate (`AB:CD:…`, as `tutti serve` prints it): the
    /// one certificate trusted at an https:// --hub.
    #[arg(long, env = "TUTTI_HUB_FINGERPRINT")]
    fingerprint: Option<String>,
    /// The hub's admin token (to change things) or read-only token (to look): in the hub's
    /// secrets file.
    #[arg(long, env = "TUTTI_TOKEN", hide_env_values = true)]
    token: String,
}

/// The hub this window drives (set once, before the window opens).
static HUB: OnceLock<(client::Endpoint, String)> = OnceLock::new();
/// Whether the token is the read-only one (the hub said, before the window opened).
static READ_ONLY: OnceLock<bool> = OnceLock::new();

fn main() -> Result<()> {
    let args = Args::parse();
    if args.token.trim().is_empty() {
        bail!("--token: the hub's admin or read-only token (its secrets file has both)");
    }
    let (url, fingerprint) = match &args.hub {
        Some(url) => (url.clone(), args.fingerprint.clone()),
        None => find_hub()?,
    };
    let endpoint = client::Endpoint::parse(&url, fingerprint.as_deref()).map_err(|e| anyhow!(e))?;
    // Asked once before the window opens, so a wrong address or token is said here, in words.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let read_only = rt
        .block_on(HubClient::new(endpoint.clone(), args.token.clone()).check())
        .with_context(|| format!("the hub at {url}"))?;
    drop(rt);
    let _ = HUB.set((endpoint, args.token));
    let _ = READ_ONLY.set(read_only);
    let style = format!("<style>{}</style>", tutti_ui::STYLE);
    let window = dioxus::desktop::WindowBuilder::new()
        .with_title("Tutti")
        .with_inner_size(dioxus::desktop::LogicalSize::new(1100.0, 800.0));
    dioxus::LaunchBuilder::desktop()
        .with_cfg(
            dioxus::desktop::Config::new()
                .with_window(window)
                .with_custom_head(style)
                .with_menu(None),
        )
        .launch(Root);
    Ok(())
}

/// The one hub mDNS finds within 3 s: its web app's address and (HTTPS) the fingerprint it
/// advertises, said on stdout so a careful user compares it with what `tutti serve` printed.
fn find_hub() -> Result<(String, Option<String>)> {
    let wait = std::time::Duration::from_secs(3);
    let hubs = tutti_node::discovery::find_hubs(wait)
        .context("looking for a hub on mDNS (or pass --hub)")?;
    let usable: Vec<_> = hubs.iter().filter_map(|h| Some((h, h.url()?))).collect();
    match usable.as_slice() {
        [] => bail!("no hub answered on mDNS within 3 s: pass --hub (`tutti serve` prints it)"),
        [(hub, url)] => {
            println!("tutti-gui: hub `{}` found on mDNS at {url}", hub.id);
            if let Some(fp) = &hub.fingerprint {
                println!("tutti-gui: its certificate SHA-256 {fp} (as `tutti serve` printed?)");
            }
            Ok((url.clone(), hub.fingerprint.clone()))
        }
        several => {
            let list: Vec<String> =
                several.iter().map(|(h, url)| format!("`{}` at {url}", h.id)).collect();
            bail!("several hubs answer on mDNS: {}; pass --hub with one", list.join(", "))
        }
    }
}

/// The window's root: the dashboard, over the hub's API.
#[allow(non_snake_case)]
fn Root() -> Element {
    let backend = use_hook(|| {
        let (endpoint, token) = HUB.get().cloned().expect("set before the window opens");
        let backend: tutti_ui::SharedBackend = Rc::new(HubClient::new(endpoint, token));
        backend
    });
    rsx! {
        tutti_ui::App { backend }
    }
}
