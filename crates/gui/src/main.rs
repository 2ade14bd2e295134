//! `tutti-gui`: Tutti's desktop app. The dashboard the hub serves at `/` (the same dioxus
//! components, `tutti-ui`), in a window of its own, driving a hub over its HTTP + WebSocket API
//! with the admin (or read-only) token.
//!
//! ```text
//! tutti-gui --hub http://127.0.0.1:7480 --token "$(jq -r .admin_token ~/.local/state/tutti/secrets.json)"
//! ```

#![forbid(unsafe_code)]

mod client;

use std::rc::Rc;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use clap::Parser;
use dioxus::prelude::*;

use crate::client::HubClient;

/// Tutti's desktop app: every speaker, room, stream and pairing of a hub.
#[derive(Parser, Debug, Clone)]
#[command(name = "tutti-gui", version)]
struct Args {
    /// The hub's API: `http://HOST:PORT` (`tutti serve` prints it; plain HTTP is for the hub's
    /// own machine or a trusted link).
    #[arg(long, env = "TUTTI_HUB_URL", default_value = "http://127.0.0.1:7480")]
    hub: String,
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
    let endpoint = client::Endpoint::parse(&args.hub)
        .with_context(|| format!("--hub {}: use http://HOST:PORT", args.hub))?;
    if args.token.trim().is_empty() {
        bail!("--token: the hub's admin or read-only token (its secrets file has both)");
    }
    // Asked once before the window opens, so a wrong address or token is said here, in words.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let read_only = rt
        .block_on(HubClient::new(endpoint.clone(), args.token.clone()).check())
        .with_context(|| format!("the hub at {}", args.hub))?;
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
