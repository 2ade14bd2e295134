//! Logs: `tracing` events from this binary and the crates below (`tutti_node`, `tutti_hub`),
//! each role's in a span naming its node. On a terminal, plain lines (warnings marked) that
//! clear the status line first; otherwise (a service's journal, a pipe) one grep-able line
//! per event: time, level, the role's span and fields, the message. `TUTTI_LOG` sets the
//! level (`error`, `warn`, `info` — the default —, `debug`, `trace`, `off`).

use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether stderr is a terminal (status lines are drawn there, and logs are plain).
pub(crate) fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Installs the logger (once, first thing in `main`).
pub(crate) fn init() {
    let level = match std::env::var("TUTTI_LOG") {
        Ok(v) => v.parse::<LevelFilter>().unwrap_or_else(|_| {
            eprintln!(
                "tutti: TUTTI_LOG={v}: use error, warn, info, debug, trace or off (using info)"
            );
            LevelFilter::INFO
        }),
        Err(_) => LevelFilter::INFO,
    };
    // Ours only: the libraries under us (the MQTT broker, mDNS) keep quiet.
    let ours = Targets::new()
        .with_target("tutti", level)
        .with_target("tutti_node", level)
        .with_target("tutti_hub", level)
        .with_target("tutti_audio", level);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(ours);
    let _ = if on_terminal() {
        registry.with(fmt.event_format(Terminal)).try_init()
    } else {
        registry.with(fmt.with_ansi(false).with_target(false)).try_init()
    };
}

/// A terminal's line: the status line cleared, warnings and errors marked, the message.
struct Terminal;

impl<S, N> FormatEvent<S, N> for Terminal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        w.write_str("\r\x1b[K")?;
        match *event.metadata().level() {
            Level::ERROR => w.write_str("error: ")?,
            Level::WARN => w.write_str("warning: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}
