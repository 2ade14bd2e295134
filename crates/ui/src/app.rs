//! The dashboard's components: the page ([`App`]), a card per speaker, the rooms, the
//! streams, pairing, and the hub's health. Each control reports what the hub answered next to
//! itself, in the API's words.

use std::rc::Rc;

use dioxus::prelude::*;
use futures_util::StreamExt;
use tutti_proto::control::{
    CalibrationState, CalibrationView, Command, NodeState, NodeView, SettingsPatch, StreamView,
    Zone,
};

use crate::{Action, Change, Done, Model, SharedBackend, device_kind};

/// The page's style sheet (the web page links it; the desktop app puts it in its head).
pub const STYLE: &str = include_str!("style.css");

/// The dashboard's properties: where it gets its data.
#[derive(Props, Clone)]
pub struct AppProps {
    /// The hub, in-process or over its API.
    pub backend: SharedBackend,
}

impl PartialEq for AppProps {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.backend, &other.backend)
    }
}

/// Which panel is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tab {
    Speakers,
    Rooms,
    Streams,
    Pairing,
    Guests,
    Health,
}

impl Tab {
    const ALL: [Tab; 6] =
        [Tab::Speakers, Tab::Rooms, Tab::Streams, Tab::Pairing, Tab::Guests, Tab::Health];

    fn label(self) -> &'static str {
        match self {
            Tab::Speakers => "Speakers",
            Tab::Rooms => "Rooms",
            Tab::Streams => "Streams",
            Tab::Pairing => "Pairing",
            Tab::Guests => "Guests",
            Tab::Health => "Health",
        }
    }
}

/// What the hub last answered a control: which control, and the message.
type Said = Signal<Option<(&'static str, String)>>;

/// Performs `action`; what the hub says goes next to `control` (nothing when it is simply
/// done). What changed comes back as the hub's event, drawn at once.
fn perform(backend: &SharedBackend, action: Action, control: &'static str, mut said: Said) {
    let backend = backend.clone();
    spawn(async move {
        match backend.perform(action).await {
            Ok(Done::Saved) => said.set(Some((
                control,
                "saved: the node is not connected, it takes it when it is back".into(),
            ))),
            Ok(_) => said.set(None),
            Err(e) => said.set(Some((control, e.message))),
        }
    });
}

/// The message for `control`, if the hub's last answer was about it.
fn said_for(said: Said, control: &'static str) -> Option<String> {
    said.read().as_ref().filter(|(c, _)| *c == control).map(|(_, m)| m.clone())
}

/// The dashboard.
#[allow(non_snake_case)]
pub fn App(props: AppProps) -> Element {
    let backend = use_context_provider(|| props.backend.clone());
    let mut model = use_signal(Model::default);
    let mut trouble = use_signal(|| None::<String>);
    let mut tab = use_signal(|| Tab::Speakers);
    use_context_provider(|| model);
    // Counts the backend's report rounds (about one a second): a clock for what is asked
    // again now and then (the health map).
    let mut ticks = use_context_provider(|| Signal::new(0u64));
    let b = backend.clone();
    use_future(move || {
        let b = b.clone();
        async move {
            loop {
                // Listen first, then look: nothing that happens in between is missed.
                let mut changes = b.changes();
                let mut local = match b.snapshot().await {
                    Ok(s) => {
                        trouble.set(None);
                        Model::new(s)
                    }
                    // Not now (the hub restarts, the network is down): say so, keep what is
                    // shown, and try again when the backend says (a new connection).
                    Err(e) => {
                        trouble.set(Some(e.message));
                        model.peek().clone()
                    }
                };
                model.set(local.clone());
                loop {
                    let changed = match changes.next().await {
                        Some(Change::Event(e)) => local.apply(e),
                        Some(Change::Reports(r)) => {
                            *ticks.write() += 1;
                            local.report(r)
                        }
                        Some(Change::Lagged) => break,
                        None => {
                            trouble.set(Some("the connection to the hub is lost".into()));
                            return;
                        }
                    };
                    if changed {
                        model.set(local.clone());
                    }
                }
            }
        }
    });
    let read_only = backend.read_only();
    // (Memos: the reports that change the model every second do not re-render the page.)
    let network = use_memo(move || model.read().hub.network.clone());
    let loaded = use_memo(move || model.read().loaded);
    let current = tab();
    rsx! {
        div { class: "app",
            header {
                h1 { "Tutti" }
                span { class: "network", "{network}" }
                if read_only {
                    span { class: "badge", id: "read-only", "read-only: you can look, not change" }
                }
                nav {
                    for t in Tab::ALL {
                        button {
                            class: if t == current { "tab on" } else { "tab" },
                            id: "tab-{t.label().to_lowercase()}",
                            onclick: move |_| tab.set(t),
                            "{t.label()}"
                        }
                    }
                }
            }
            if let Some(t) = trouble() {
                p { class: "trouble", "{t}" }
            }
            if !loaded() {
                p { class: "muted", "connecting to the hub…" }
            } else {
                match current {
                    Tab::Speakers => rsx! { Speakers {} },
                    Tab::Rooms => rsx! { Rooms {} },
                    Tab::Streams => rsx! { Streams {} },
                    Tab::Pairing => rsx! { Pairing {} },
                    Tab::Guests => rsx! { Guests {} },
                    Tab::Health => rsx! { Health {} },
                }
            }
        }
    }
}

/// The shared model.
fn use_model() -> Signal<Model> {
    use_context::<Signal<Model>>()
}

/// A card per player.
#[component]
fn Speakers() -> Element {
    let model = use_model();
    // Memos: each part re-renders when what it shows changes, not when any node reports.
    let ids = use_memo(move || {
        model.read().players().into_iter().map(|n| n.info.id.clone()).collect::<Vec<_>>()
    });
    let zones = use_memo(move || model.read().zones.keys().cloned().collect::<Vec<_>>());
    rsx! {
        if ids.read().is_empty() {
            p { class: "muted", "No speakers yet: start `tutti play` on a machine, or pair one (Pairing)." }
        }
        div { class: "cards",
            for id in ids() {
                NodeCard { key: "{id}", id: id.clone(), zones: zones() }
            }
        }
    }
}

/// "12.3" for `Some(12.34)` at one decimal, "—" for `None`.
fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.decimals$}"))
}

/// How long ago, for people.
fn ago(ms: u64) -> String {
    match ms / 1000 {
        0 => "just now".into(),
        s @ 1..=119 => format!("{s} s ago"),
        s @ 120..=7199 => format!("{} min ago", s / 60),
        s @ 7200..=172_799 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// One speaker: what it is, how it plays, and its controls.
#[component]
fn NodeCard(id: String, zones: Vec<String>) -> Element {
    let backend = use_context::<SharedBackend>();
    let said: Said = use_signal(|| None);
    let ro = backend.read_only();
    let model = use_model();
    // The card without the figures that change with every report (those are `Figures`'s).
    let card = use_memo({
        let id = id.clone();
        move || {
            model.read().nodes.get(&id).map(|n| NodeView {
                state: NodeState {
                    streaming: n.state.streaming,
                    stream: n.state.stream.clone(),
                    problem: n.state.problem.clone(),
                    ..Default::default()
                },
                last_seen_ms: if n.online { 0 } else { n.last_seen_ms },
                ..n.clone()
            })
        }
    });
    let Some(node) = card() else { return rsx! {} };
    let s = &node.state;
    let can = |k: &str| node.info.capabilities.iter().any(|c| c == k);
    let status = if node.online {
        if s.streaming { "playing" } else { "online, not playing" }
    } else {
        "offline"
    };
    let seen =
        if node.online { String::new() } else { format!(", last seen {}", ago(node.last_seen_ms)) };
    let volume = node.settings.volume.round();
    let delay = node.settings.delay_ms;
    let zone = node.settings.zone.clone().unwrap_or_default();
    let patch = {
        let backend = backend.clone();
        let id = id.clone();
        move |patch: SettingsPatch, control: &'static str| {
            perform(&backend, Action::Patch { id: id.clone(), patch }, control, said)
        }
    };
    let command = {
        let backend = backend.clone();
        let id = id.clone();
        move |command: Command, control: &'static str| {
            perform(&backend, Action::Command { id: id.clone(), command }, control, said)
        }
    };
    let (p2, p3, p4, p6) = (patch.clone(), patch.clone(), patch.clone(), patch);
    let (c1, c2, c3, c4) = (command.clone(), command.clone(), command.clone(), command);
    let plays = s.stream.clone().unwrap_or_else(|| "nothing".into());
    rsx! {
        div { class: if node.online { "card node" } else { "card node offline" }, "data-id": "{id}",
            div { class: "title",
                h2 { class: "name", "{node.name}" }
                span { class: "kind", "{device_kind(&node.info.device)}" }
            }
            p { class: "node-id", "{id}" }
            p { class: "status",
                span { class: if node.online { "dot on" } else { "dot" } }
                "{status}{seen}"
                if !zone.is_empty() { " · room " b { class: "zone-name", "{zone}" } }
            }
            if let Some(p) = &s.problem {
                p { class: "problem", "{p}" }
            }
            Figures { id: id.clone() }
            p { class: "plays", "plays {plays}" }
            if can("volume") {
                label { class: "row",
                    "volume"
                    Field {
                        kind: "range",
                        class: "volume",
                        value: volume.to_string(),
                        disabled: ro,
                        target: Target::NodeVolume(id.clone()),
                        said,
                    }
                    span { class: "volume-value", "{volume}%" }
                }
                if let Some(m) = said_for(said, "volume") { p { class: "error", "{m}" } }
            }
            div { class: "row buttons",
                if can("mute") {
                    button {
                        class: if node.settings.mute { "mute on" } else { "mute" },
                        disabled: ro,
                        onclick: {
                            let mute = node.settings.mute;
                            move |_| p2(SettingsPatch { mute: Some(!mute), ..Default::default() }, "mute")
                        },
                        if node.settings.mute { "unmute" } else { "mute" }
                    }
                }
                if can("resync") {
                    button { class: "resync", disabled: ro, onclick: move |_| c1(Command::Resync, "resync"), "resync" }
                }
                if can("identify") {
                    button { class: "identify", disabled: ro, onclick: move |_| c2(Command::Identify, "identify"), "identify" }
                }
                if can("test_tone") {
                    button { class: "test-tone", disabled: ro, onclick: move |_| c3(Command::TestTone, "test_tone"), "test tone" }
                }
                if can("say") {
                    button { class: "say-status", disabled: ro, onclick: move |_| c4(Command::SayStatus, "say_status"), "say status" }
                }
            }
            for c in ["mute", "resync", "identify", "test_tone", "say_status"] {
                if let Some(m) = said_for(said, c) { p { class: "error", "{m}" } }
            }
            label { class: "row",
                "room"
                select {
                    class: "zone",
                    disabled: ro,
                    onchange: move |e: FormEvent| p3(SettingsPatch { zone: Some(e.value()), ..Default::default() }, "zone"),
                    option { value: "", selected: zone.is_empty(), "no room" }
                    for z in zones.iter() {
                        option { value: "{z}", selected: *z == zone, "{z}" }
                    }
                }
            }
            if let Some(m) = said_for(said, "zone") { p { class: "error", "{m}" } }
            if can("delay") {
                label { class: "row",
                    "delay"
                    button {
                        class: "delay-down",
                        disabled: ro,
                        onclick: move |_| p4(SettingsPatch { delay_ms: Some(delay - 0.5), ..Default::default() }, "delay"),
                        "−"
                    }
                    Field {
                        kind: "number",
                        class: "delay",
                        value: delay.to_string(),
                        disabled: ro,
                        target: Target::NodeDelay(id.clone()),
                        said,
                    }
                    button {
                        class: "delay-up",
                        disabled: ro,
                        onclick: move |_| p6(SettingsPatch { delay_ms: Some(delay + 0.5), ..Default::default() }, "delay"),
                        "+"
                    }
                    span { "ms" }
                }
                if let Some(m) = said_for(said, "delay") { p { class: "error", "{m}" } }
            }
        }
    }
}

/// What an edited value sets.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    /// A node's volume, %.
    NodeVolume(String),
    /// A node's per-device delay, ms.
    NodeDelay(String),
    /// A zone's group latency, ms (empty: the stream's own).
    ZoneLatency(String),
    /// Every player of a zone, %, on one frame.
    ZoneVolume(String),
}

/// A value the user drags or types (a slider, a number). A component of its own: its card
/// re-renders with every state report (several a second), and a re-rendered input is set back
/// to the value rendered, under the user's finger; this one re-renders only when the value the
/// hub holds changes (the hub's answer to the change, or another controller).
#[component]
fn Field(
    kind: &'static str,
    class: &'static str,
    value: String,
    disabled: bool,
    target: Target,
    said: Said,
) -> Element {
    let backend = use_context::<SharedBackend>();
    let (min, max, step) = match (&target, kind) {
        (_, "range") => ("0", "100", "1"),
        (Target::NodeDelay(_), _) => ("-1000", "1000", "0.1"),
        _ => ("10", "5000", "5"),
    };
    let placeholder = if matches!(target, Target::ZoneLatency(_)) { "the stream's" } else { "" };
    let onchange = move |e: FormEvent| {
        let text = e.value();
        let text = text.trim();
        // A number, or (a zone's latency) nothing: the stream's own.
        let number = match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ if text.is_empty() && matches!(target, Target::ZoneLatency(_)) => Ok(None),
            _ => Err(()),
        };
        let Ok(number) = number else {
            let (control, message) = match &target {
                Target::NodeDelay(_) => ("delay", "delay: milliseconds, −1000 to 1000"),
                Target::ZoneLatency(_) => {
                    ("latency", "latency: milliseconds, or empty for the stream's own")
                }
                _ => ("volume", "volume: 0 to 100 %"),
            };
            said.clone().set(Some((control, message.into())));
            return;
        };
        let v = number.unwrap_or_default();
        let (action, control) = match &target {
            Target::NodeVolume(id) => (
                Action::Patch {
                    id: id.clone(),
                    patch: SettingsPatch { volume: Some(v as f32), ..Default::default() },
                },
                "volume",
            ),
            Target::NodeDelay(id) => (
                Action::Patch {
                    id: id.clone(),
                    patch: SettingsPatch { delay_ms: Some(v), ..Default::default() },
                },
                "delay",
            ),
            Target::ZoneLatency(name) => {
                // The zone as it is now (its stream may have changed since this rendered).
                let zone = consume_context::<Signal<Model>>().peek().zones.get(name).cloned();
                let zone =
                    zone.unwrap_or_else(|| Zone { name: name.clone(), ..Default::default() });
                (Action::PutZone(Zone { latency_ms: number, ..zone }), "latency")
            }
            Target::ZoneVolume(name) => (
                Action::ZoneCommand {
                    name: name.clone(),
                    command: Command::Volume { percent: v as f32, at: None },
                },
                "volume",
            ),
        };
        perform(&backend, action, control, said);
    };
    rsx! {
        input {
            class: "{class}",
            r#type: "{kind}",
            min: "{min}",
            max: "{max}",
            step: "{step}",
            placeholder: "{placeholder}",
            value: "{value}",
            disabled,
            onchange,
        }
    }
}

/// A node's figures, as it last reported them: re-rendered when a figure shown changes.
#[component]
fn Figures(id: String) -> Element {
    let model = use_model();
    let shown = use_memo(move || {
        let m = model.read();
        let Some(s) = m.nodes.get(&id).map(|n| &n.state) else { return Vec::new() };
        vec![
            ("offset", "offset", format!("{} µs", num(s.offset_us, 0))),
            ("drift", "", format!("{} ppm", num(s.skew_ppm, 1))),
            (
                "link",
                "link",
                s.jitter_ms.map_or("—", |j| crate::link_quality(j, s.latency_ms).1).to_owned(),
            ),
            ("jitter", "jitter", format!("{} ms", num(s.jitter_ms, 2))),
            ("group latency", "latency", format!("{} ms", num(s.latency_ms, 1))),
            ("buffer", "buffer", format!("{} ms", num(s.buffered_ms, 1))),
            ("device", "", format!("{} ms", num(s.device_latency_ms, 1))),
            ("underruns", "underruns", s.underruns.to_string()),
            ("concealed", "", s.concealed.to_string()),
            ("resyncs", "resyncs", s.resyncs.to_string()),
            ("recovered", "", s.recovered.to_string()),
        ]
    });
    rsx! {
        dl { class: "figures",
            for (name, class, value) in shown() {
                dt { "{name}" }
                dd { class: "{class}", "{value}" }
            }
        }
    }
}

/// The rooms (zones): their stream, latency, volume and players.
#[component]
fn Rooms() -> Element {
    let backend = use_context::<SharedBackend>();
    let model = use_model();
    let said: Said = use_signal(|| None);
    let mut new_name = use_signal(String::new);
    let ro = backend.read_only();
    let m = model.read();
    let zones: Vec<Zone> = m.zones.values().cloned().collect();
    let streams = m.streams();
    let create = move |_| {
        let name = new_name.peek().trim().to_owned();
        if name.is_empty() {
            said.clone().set(Some(("create", "a room needs a name".into())));
            return;
        }
        perform(
            &backend,
            Action::PutZone(Zone { name, source: None, latency_ms: None }),
            "create",
            said,
        );
        new_name.set(String::new());
    };
    rsx! {
        div { class: "cards",
            for z in zones {
                ZoneCard { key: "{z.name}", zone: z.clone(), streams: streams.clone(), members: m.members(&z.name).into_iter().cloned().collect::<Vec<_>>(), calibration: m.calibrations.get(&z.name).cloned(), drift: m.drift.get(&z.name).copied().flatten() }
            }
        }
        div { class: "card create",
            h2 { "New room" }
            label { class: "row",
                input {
                    class: "new-zone",
                    placeholder: "kitchen",
                    value: "{new_name}",
                    disabled: ro,
                    oninput: move |e: FormEvent| new_name.set(e.value()),
                }
                button { class: "create-zone", disabled: ro, onclick: create, "create" }
            }
            if let Some(m) = said_for(said, "create") { p { class: "error", "{m}" } }
        }
    }
}

/// One room.
#[component]
fn ZoneCard(
    zone: Zone,
    streams: Vec<StreamView>,
    members: Vec<NodeView>,
    calibration: Option<CalibrationView>,
    drift: Option<f64>,
) -> Element {
    let backend = use_context::<SharedBackend>();
    let said: Said = use_signal(|| None);
    let mut renaming = use_signal(|| None::<String>);
    let ro = backend.read_only();
    let name = zone.name.clone();
    let volume = if members.is_empty() {
        100.0
    } else {
        (members.iter().map(|n| n.settings.volume).sum::<f32>() / members.len() as f32).round()
    };
    let muted = !members.is_empty() && members.iter().all(|n| n.settings.mute);
    let latency = zone.latency_ms.map(|l| l.to_string()).unwrap_or_default();
    let source = zone.source.clone().unwrap_or_default();
    let act = {
        let backend = backend.clone();
        move |action: Action, control: &'static str| perform(&backend, action, control, said)
    };
    let (a1, a4, a5, a6) = (act.clone(), act.clone(), act.clone(), act);
    let (z1, z4, z5) = (zone.clone(), name.clone(), name.clone());
    let rename = {
        let backend = backend.clone();
        let zone = zone.clone();
        let ids: Vec<String> = members.iter().map(|n| n.info.id.clone()).collect();
        move |_| {
            let Some(to) = renaming.peek().clone().map(|s| s.trim().to_owned()) else { return };
            renaming.set(None);
            if to.is_empty() || to == zone.name {
                return;
            }
            // The API has no rename: the new room takes the old one's stream and latency,
            // its players move, and the old one goes.
            let backend = backend.clone();
            let zone = zone.clone();
            let ids = ids.clone();
            let mut said = said;
            spawn(async move {
                let mut steps = vec![Action::PutZone(Zone { name: to.clone(), ..zone.clone() })];
                steps.extend(ids.into_iter().map(|id| Action::Patch {
                    id,
                    patch: SettingsPatch { zone: Some(to.clone()), ..Default::default() },
                }));
                steps.push(Action::DeleteZone(zone.name.clone()));
                for step in steps {
                    if let Err(e) = backend.perform(step).await {
                        said.set(Some(("rename", e.message)));
                        return;
                    }
                }
            });
        }
    };
    rsx! {
        div { class: "card zone", "data-zone": "{name}",
            div { class: "title",
                if let Some(r) = renaming() {
                    input { class: "rename", value: "{r}", oninput: move |e: FormEvent| renaming.set(Some(e.value())) }
                    button { class: "rename-ok", onclick: rename, "save" }
                } else {
                    h2 { class: "name", "{name}" }
                    button { class: "rename-start small", disabled: ro, onclick: {
                        let n = name.clone();
                        move |_| renaming.set(Some(n.clone()))
                    }, "rename" }
                }
            }
            if let Some(m) = said_for(said, "rename") { p { class: "error", "{m}" } }
            p { class: "members",
                if members.is_empty() { "no speakers yet: pick this room on a speaker's card" }
                for n in members.iter() { span { class: "member", "{n.name}" } }
            }
            label { class: "row",
                "stream"
                select {
                    class: "zone-source",
                    disabled: ro,
                    onchange: move |e: FormEvent| {
                        let v = e.value();
                        a1(Action::PutZone(Zone { source: (!v.is_empty()).then_some(v), ..z1.clone() }), "stream");
                    },
                    option { value: "", selected: source.is_empty(), "none" }
                    for s in streams.iter() {
                        option { value: "{s.address}", selected: tutti_proto::control::plays(&source, &s.address), "{s.name} ({s.address})" }
                    }
                }
            }
            if let Some(m) = said_for(said, "stream") { p { class: "error", "{m}" } }
            label { class: "row",
                "latency"
                Field {
                    kind: "number",
                    class: "zone-latency",
                    value: latency,
                    disabled: ro,
                    target: Target::ZoneLatency(name.clone()),
                    said,
                }
                span { "ms" }
            }
            if let Some(m) = said_for(said, "latency") { p { class: "error", "{m}" } }
            label { class: "row",
                "volume"
                Field {
                    kind: "range",
                    class: "zone-volume",
                    value: volume.to_string(),
                    disabled: ro || members.is_empty(),
                    target: Target::ZoneVolume(name.clone()),
                    said,
                }
                span { "{volume}%" }
            }
            if let Some(m) = said_for(said, "volume") { p { class: "error", "{m}" } }
            div { class: "row buttons",
                button {
                    class: "zone-mute",
                    disabled: ro || members.is_empty(),
                    onclick: move |_| a4(Action::ZoneCommand { name: z4.clone(), command: Command::Mute { mute: !muted, at: None } }, "mute"),
                    if muted { "unmute room" } else { "mute room" }
                }
                button {
                    class: "zone-delete danger",
                    disabled: ro,
                    onclick: move |_| a5(Action::DeleteZone(z5.clone()), "delete"),
                    "delete room"
                }
                button {
                    class: "zone-identify",
                    disabled: ro || members.is_empty(),
                    onclick: {
                        let n = name.clone();
                        move |_| a6(Action::ZoneCommand { name: n.clone(), command: Command::Identify }, "identify")
                    },
                    "identify"
                }
            }
            for c in ["mute", "delete", "identify"] {
                if let Some(m) = said_for(said, c) { p { class: "error", "{m}" } }
            }
            if let Some(run) = calibration {
                p { class: "zone-calibration",
                    "calibration ({run.reason}): "
                    b { "{calibration_state(run.state)}" }
                    " — {run.message}"
                }
            }
            if let Some(d) = drift {
                p { class: "zone-drift", "acoustic drift {d:+.1} ms (the microphone's watch)" }
            }
        }
    }
}

/// A calibration's state in a word.
fn calibration_state(s: CalibrationState) -> &'static str {
    match s {
        CalibrationState::Playing => "playing the sequence",
        CalibrationState::Estimating => "estimating",
        CalibrationState::Applied => "applied",
        CalibrationState::Measured => "measured",
        CalibrationState::Refused => "refused",
        CalibrationState::Cancelled => "cancelled",
        CalibrationState::Failed => "failed",
    }
}

/// The sources: what each plays, its transport, and which rooms listen.
#[component]
fn Streams() -> Element {
    let model = use_model();
    let m = model.read();
    let streams = m.streams();
    let zones: Vec<Zone> = m.zones.values().cloned().collect();
    rsx! {
        if streams.is_empty() {
            p { class: "muted", "No sources yet: start `tutti stream` (a file, a folder, a device, a tone) with --hub." }
        }
        div { class: "cards",
            for s in streams {
                StreamCard { key: "{s.id}", stream: s.clone(), zones: zones.clone() }
            }
        }
    }
}

/// One source.
#[component]
fn StreamCard(stream: StreamView, zones: Vec<Zone>) -> Element {
    let backend = use_context::<SharedBackend>();
    let said: Said = use_signal(|| None);
    let ro = backend.read_only();
    let t = stream.track.clone();
    let title =
        t.as_ref().and_then(|t| t.title.clone()).or_else(|| t.as_ref().map(|t| t.file.clone()));
    let artist = t.as_ref().and_then(|t| t.artist.clone()).unwrap_or_default();
    let elapsed = t.as_ref().map(|t| t.elapsed_s).unwrap_or(0.0);
    let duration = t.as_ref().and_then(|t| t.duration_s);
    let clock = |s: f64| format!("{}:{:02}", (s / 60.0) as u64, (s as u64) % 60);
    let position = match duration {
        Some(d) => format!("{} / {}", clock(elapsed), clock(d)),
        None if t.is_some() => clock(elapsed),
        None => String::new(),
    };
    let transport = t.as_ref().map(|t| t.transport.clone()).unwrap_or_default();
    let cover = t.as_ref().is_some_and(|t| t.cover);
    let others: Vec<String> =
        zones.iter().filter(|z| !stream.zones.contains(&z.name)).map(|z| z.name.clone()).collect();
    let id = stream.id.clone();
    let address = stream.address.clone();
    rsx! {
        div { class: "card stream", "data-id": "{id}",
            div { class: "title",
                h2 { class: "name", "{stream.name}" }
                span { class: "kind", if stream.online { "online" } else { "offline" } }
            }
            if cover {
                Cover { key: "{id}-{title.clone().unwrap_or_default()}", id: id.clone() }
            }
            if let Some(title) = title {
                p { class: "track", b { "{title}" } if !artist.is_empty() { " — {artist}" } }
                p { class: "muted", "{transport} {position}" }
            } else {
                p { class: "muted", "sends {stream.stream.clone().unwrap_or_default()}" }
            }
            p { class: "listeners",
                "{stream.players.unwrap_or(0)} players · rooms: "
                if stream.zones.is_empty() { "none" }
                for z in stream.zones.iter() { span { class: "member", "{z}" } }
            }
            div { class: "row buttons",
                for k in stream.controls.clone() {
                    button {
                        class: "transport {k}",
                        disabled: ro,
                        onclick: {
                            let backend = backend.clone();
                            let id = id.clone();
                            let k = k.clone();
                            move |_| {
                                let command = match k.as_str() {
                                    "start" => Command::Start,
                                    "pause" => Command::Pause,
                                    "stop" => Command::Stop,
                                    _ => Command::Skip,
                                };
                                perform(&backend, Action::Command { id: id.clone(), command }, "transport", said)
                            }
                        },
                        "{k}"
                    }
                }
            }
            if !others.is_empty() {
                label { class: "row",
                    "play in"
                    select {
                        class: "route",
                        disabled: ro,
                        onchange: {
                            let backend = backend.clone();
                            let zones = zones.clone();
                            move |e: FormEvent| {
                                let v = e.value();
                                if let Some(z) = zones.iter().find(|z| z.name == v) {
                                    let zone = Zone { source: Some(address.clone()), ..z.clone() };
                                    perform(&backend, Action::PutZone(zone), "transport", said);
                                }
                            }
                        },
                        option { value: "", selected: true, "a room…" }
                        for z in others.iter() { option { value: "{z}", "{z}" } }
                    }
                }
            }
            if let Some(m) = said_for(said, "transport") { p { class: "error", "{m}" } }
        }
    }
}

/// A stream's cover art, fetched as the backend says (keyed by the track: a new track, a new
/// picture).
#[component]
fn Cover(id: String) -> Element {
    let backend = use_context::<SharedBackend>();
    let src = use_resource(move || {
        let (backend, id) = (backend.clone(), id.clone());
        async move { backend.cover_src(&id).await }
    });
    let src = src.read().clone().flatten();
    rsx! {
        if let Some(src) = src {
            img { class: "cover", src: "{src}", alt: "cover" }
        }
    }
}

/// Adding a node (a one-time link and its QR code) and the paired nodes, with revoke.
#[component]
fn Pairing() -> Element {
    let backend = use_context::<SharedBackend>();
    let model = use_model();
    let said: Said = use_signal(|| None);
    let mut offer = use_signal(|| None::<tutti_proto::control::PairingOffer>);
    let ro = backend.read_only();
    let paired = model.read().paired.clone();
    let add = {
        let backend = backend.clone();
        let mut said = said;
        move |_| {
            let backend = backend.clone();
            spawn(async move {
                match backend.perform(Action::Pair).await {
                    Ok(Done::Pairing(o)) => {
                        offer.set(Some(o));
                        said.set(None);
                    }
                    Ok(_) => {}
                    Err(e) => said.set(Some(("pair", e.message))),
                }
            });
        }
    };
    rsx! {
        div { class: "card pairing",
            h2 { "Add a speaker" }
            p { class: "muted", "A one-time link: the new node takes it once, within its lifetime, and is paired." }
            button { class: "pair", disabled: ro, onclick: add, "add a speaker" }
            if let Some(m) = said_for(said, "pair") { p { class: "error", "{m}" } }
            if let Some(o) = offer() {
                div { class: "qr", dangerous_inner_html: "{o.qr_svg}" }
                p { "On the new node run:" }
                pre { class: "how", "tutti pair '{o.link}'" }
                p { class: "muted", "valid {o.expires_in_s / 60} min; the hub's link: {o.hub}" }
                if let Some(f) = &o.tls_fingerprint {
                    p { class: "muted fingerprint", "HTTPS certificate SHA-256: {f}" }
                }
            }
        }
        div { class: "card paired",
            h2 { "Paired nodes" }
            if paired.is_empty() { p { class: "muted", "none yet" } }
            ul {
                for p in paired {
                    li { class: "paired-node", "data-id": "{p.id}",
                        span { "{p.name} " }
                        span { class: "muted", "({p.id})" }
                        button {
                            class: "revoke danger small",
                            disabled: ro,
                            onclick: {
                                let backend = backend.clone();
                                let id = p.id.clone();
                                // (The list that follows comes back as the hub's event.)
                                move |_| perform(&backend, Action::Revoke(id.clone()), "revoke", said)
                            },
                            "revoke"
                        }
                    }
                }
            }
            if let Some(m) = said_for(said, "revoke") { p { class: "error", "{m}" } }
        }
    }
}

/// Guests: a one-time invitation as a QR code for a phone to scan, and who is here, each
/// with "send away".
#[component]
fn Guests() -> Element {
    let backend = use_context::<SharedBackend>();
    let model = use_model();
    let said: Said = use_signal(|| None);
    let mut invite = use_signal(|| None::<tutti_proto::control::GuestInvite>);
    let ro = backend.read_only();
    let guests = model.read().guests.clone();
    let ask = {
        let backend = backend.clone();
        let mut said = said;
        move |_| {
            let backend = backend.clone();
            spawn(async move {
                match backend.perform(Action::InviteGuest).await {
                    Ok(Done::Invite(i)) => {
                        invite.set(Some(i));
                        said.set(None);
                    }
                    Ok(_) => {}
                    Err(e) => said.set(Some(("invite", e.message))),
                }
            });
        }
    };
    rsx! {
        div { class: "card invite",
            h2 { "Invite a guest" }
            p { class: "muted", "A phone scans the code and joins as a guest: it can listen and sing, never change settings. Each code works once." }
            button { class: "invite-guest", disabled: ro, onclick: ask, "invite a guest" }
            if let Some(m) = said_for(said, "invite") { p { class: "error", "{m}" } }
            if let Some(i) = invite() {
                div { class: "qr", dangerous_inner_html: "{i.qr_svg}" }
                p { a { class: "guest-link", href: "{i.link}", "{i.link}" } }
                p { class: "muted", "scan within {i.expires_in_s / 60} min; a guest stays {i.guest_for_s / 3600} h" }
            }
        }
        div { class: "card guests",
            h2 { "Guests" }
            if guests.is_empty() { p { class: "muted", "none yet" } }
            ul {
                for g in guests {
                    li { class: "guest", "data-id": "{g.id}",
                        span { "{g.name} " }
                        span { class: "muted", "({g.id})" }
                        button {
                            class: "kick danger small",
                            disabled: ro,
                            onclick: {
                                let backend = backend.clone();
                                let id = g.id.clone();
                                move |_| perform(&backend, Action::Kick(id.clone()), "kick", said)
                            },
                            "send away"
                        }
                    }
                }
            }
            if let Some(m) = said_for(said, "kick") { p { class: "error", "{m}" } }
        }
    }
}

/// Every player's last hour, a cell a minute: green when its clock held and nothing was lost,
/// yellow or orange as the clock estimate moved more, red when packets were concealed or the
/// device ran short; grey where it did not report.
#[component]
fn Heatmap() -> Element {
    let backend = use_context::<SharedBackend>();
    let model = use_model();
    let ticks = use_context::<Signal<u64>>();
    // Asked again every half minute (the map's cells are minutes).
    let every = use_memo(move || ticks() / 30);
    let health = use_resource(move || {
        let _ = every();
        backend.health()
    });
    let players: Vec<(String, String)> =
        model.read().players().into_iter().map(|n| (n.info.id.clone(), n.name.clone())).collect();
    let h = health.read();
    let map = match &*h {
        Some(Ok(map)) => map.clone(),
        Some(Err(e)) => return rsx! { p { class: "error", "{e.message}" } },
        None => return rsx! { p { class: "muted", "loading…" } },
    };
    let latency = |id: &str| model.read().nodes.get(id).and_then(|n| n.state.latency_ms);
    rsx! {
        table { class: "heatmap",
            thead { tr { th { colspan: "2", "speaker" } th { colspan: "60", "an hour, a minute a cell (now on the right). sync: green held, yellow/orange the clock moved > 0.1/1 ms, red lost audio. arrivals: the packets' jitter against the latency, green to red" } } }
            tbody {
                for (id, name) in players {
                    for metric in ["sync", "arrivals"] {
                        tr { "data-id": "{id}", "data-metric": metric,
                            td { class: "who", title: "{id}", if metric == "sync" { "{name}" } }
                            td { class: "metric", "{metric}" }
                            for ago in (0..60u32).rev() {
                                {
                                    let m = map.get(&id).and_then(|ms| ms.iter().find(|m| m.ago_min == ago));
                                    let (class, title) = if metric == "sync" { cell(ago, m) } else { jitter_cell(ago, m, latency(&id)) };
                                    rsx! { td { class: "cell {class}", title: "{title}" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A minute's worst arrival jitter, coloured against the latency the node plays at.
fn jitter_cell(
    ago: u32,
    m: Option<&tutti_proto::control::HealthMinute>,
    latency_ms: Option<f64>,
) -> (&'static str, String) {
    let Some(j) = m.filter(|m| m.reports > 0).and_then(|m| m.jitter_max_ms) else {
        return ("none", format!("{ago} min ago: no arrivals reported"));
    };
    let (class, word) = crate::link_quality(j, latency_ms);
    (class, format!("{ago} min ago: jitter up to {j:.2} ms ({word})"))
}

/// A minute's colour and what it says when pointed at.
fn cell(ago: u32, m: Option<&tutti_proto::control::HealthMinute>) -> (&'static str, String) {
    let Some(m) = m.filter(|m| m.reports > 0) else {
        return ("none", format!("{ago} min ago: no reports"));
    };
    let spread = m.offset_spread_us();
    let class = if m.concealed > 0 || m.underruns > 0 {
        "bad"
    } else {
        match spread {
            Some(s) if s > 1000.0 => "poor",
            Some(s) if s > 100.0 => "fair",
            _ => "good",
        }
    };
    let spread = spread.map_or("no clock yet".to_owned(), |s| format!("clock moved {s:.0} µs"));
    let title = format!(
        "{ago} min ago: {spread}, {} packets concealed, {} frames short",
        m.concealed, m.underruns
    );
    (class, title)
}

/// The hub's own status and every player's sync figures.
#[component]
fn Health() -> Element {
    let model = use_model();
    let m = model.read();
    let hub = m.hub.clone();
    let players: Vec<NodeView> = m.players().into_iter().cloned().collect();
    rsx! {
        div { class: "card hub",
            h2 { "Hub" }
            dl { class: "figures",
                dt { "network" } dd { "{hub.network}" }
                dt { "version" } dd { "{hub.version}" }
                dt { "MQTT" } dd { "{hub.mqtt.clone().unwrap_or_else(|| \"off\".into())}" }
                dt { "discovery" } dd { class: "discovery", "{hub.discovery}" }
                dt { "keys" } dd { class: "keys", if hub.rotating { "rotating" } else { "steady" } ", made {ago(hub.keys_age_s.saturating_mul(1000))}" }
                dt { "nodes" } dd { "{m.nodes.values().filter(|n| n.online).count()} online of {m.nodes.len()}" }
            }
            if let Some(f) = &hub.tls_fingerprint {
                p { class: "muted fingerprint", "HTTPS certificate SHA-256: {f}" }
            }
        }
        div { class: "card health",
            h2 { "The last hour" }
            Heatmap {}
        }
        div { class: "card sync",
            h2 { "Sync" }
            table {
                thead { tr { th { "speaker" } th { "offset µs" } th { "drift ppm" } th { "latency ms" } th { "concealed" } th { "underruns" } } }
                tbody {
                    for n in players {
                        tr { class: if n.online { "" } else { "offline" },
                            td { "{n.name}" }
                            td { "{num(n.state.offset_us, 0)}" }
                            td { "{num(n.state.skew_ppm, 1)}" }
                            td { "{num(n.state.latency_ms, 1)}" }
                            td { "{n.state.concealed}" }
                            td { "{n.state.underruns}" }
                        }
                    }
                }
            }
        }
    }
}
