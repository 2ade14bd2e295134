//! The hub's state: nodes, their settings, zones. Plain data and rules, no I/O: the API and
//! the node link call it under one lock, and it says what changed (events) and what each
//! node must be told (commands).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use tutti_proto::control::SettingsPatch;
use tutti_proto::control::{
    CalibrationRecord, Command, Event, HealthMinute, NodeInfo, NodeState, NodeView, Settings, Zone,
};

/// A minute.
const MINUTE: Duration = Duration::from_secs(60);

/// A node silent this long is marked lost (kept, with its settings).
pub const LOST_AFTER: Duration = Duration::from_secs(2);

/// How far ahead of "now" a zone-wide change is scheduled: time for the command to reach
/// every player (they obey within a millisecond on a LAN; Wi-Fi may take tens) before the
/// frame it starts on is rendered.
pub const ZONE_LEAD: Duration = Duration::from_millis(150);

/// What survives a hub restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// Settings per node id.
    #[serde(default)]
    pub settings: BTreeMap<String, Settings>,
    /// Zones by name.
    #[serde(default)]
    pub zones: BTreeMap<String, Zone>,
    /// Nodes seen, by id (so a restarted hub lists them, lost, before they reconnect).
    #[serde(default)]
    pub known: BTreeMap<String, NodeInfo>,
    /// Each node's calibration history, oldest first (the last [`HISTORY`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calibrations: BTreeMap<String, VecDeque<CalibrationRecord>>,
}

/// How many calibration records the hub keeps per node.
pub const HISTORY: usize = 50;

#[derive(Debug)]
struct Entry {
    info: NodeInfo,
    state: NodeState,
    last_seen: Option<Instant>,
    online: bool,
    /// The last hour of its reports, a minute each, oldest first.
    health: VecDeque<Minute>,
}

/// How many minutes of each node's reports the hub keeps.
pub const HEALTH_MINUTES: usize = 60;

/// A minute of reports as they come in.
#[derive(Debug, Clone)]
struct Minute {
    start: Instant,
    offset: Option<(f64, f64)>,
    jitter_max: Option<f64>,
    concealed: u64,
    underruns: u64,
    reports: u32,
}

/// What a counter rose by since `before` (a node that restarted counts from zero again).
fn rise(before: u64, now: u64) -> u64 {
    if now >= before { now - before } else { now }
}

/// Why a request cannot be done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// No such node.
    #[error("no node `{0}`: GET /api/nodes lists them")]
    NoNode(String),
    /// No such zone.
    #[error("no zone `{0}`: GET /api/zones lists them")]
    NoZone(String),
    /// A field is out of range.
    #[error("`{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong and the fix.
        message: String,
    },
    /// The change could not be saved, so it was not made.
    #[error(
        "the hub could not save this change ({0}); nothing changed: free space or make the \
         state directory writable, then try again"
    )]
    NotSaved(String),
}

/// Checks a zone's source: `host:port` with a port of 1–65535, an IP literal that parses
/// (`[v6]:port` too), or a host name of DNS characters. Whether it answers is the player's
/// to find out (it waits for a silent source and says so).
fn check_source(s: &str) -> Result<(), &'static str> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = s.rsplit_once(':').ok_or("no port")?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err("the port must be 1–65535"),
    }
    if host.is_empty() || host.len() > 253 {
        return Err("no host");
    }
    if host.starts_with('[') || host.contains(':') {
        return Err("not an IPv6 address");
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return host.parse::<std::net::Ipv4Addr>().map(|_| ()).map_err(|_| "not an IPv4 address");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if host.trim_end_matches('.').split('.').all(label_ok) {
        Ok(())
    } else {
        Err("not a host name")
    }
}

/// The longest name shown for a node, characters.
pub const MAX_NAME: usize = 64;

/// A name as the hub shows it: trimmed, at most [`MAX_NAME`] characters, without control
/// characters (NUL, escapes) or bidirectional overrides (which make a name read as another).
pub fn display_name(name: &str) -> String {
    let clean = name.chars().filter(|&c| {
        !c.is_control() && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
    });
    clean
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_NAME)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// Everything the hub knows.
#[derive(Debug, Default)]
pub struct Registry {
    nodes: BTreeMap<String, Entry>,
    persisted: Persisted,
}

impl Registry {
    /// A registry restored from `persisted` (its nodes listed as lost until they reconnect).
    pub fn new(persisted: Persisted) -> Self {
        let nodes = persisted
            .known
            .iter()
            .map(|(id, info)| {
                let e = Entry {
                    info: info.clone(),
                    state: NodeState::default(),
                    last_seen: None,
                    online: false,
                    health: VecDeque::new(),
                };
                (id.clone(), e)
            })
            .collect();
        Registry { nodes, persisted }
    }

    /// What to save.
    pub fn persisted(&self) -> &Persisted {
        &self.persisted
    }

    /// Puts back what was saved (a change that could not be saved is undone).
    pub(crate) fn restore(&mut self, persisted: Persisted) {
        self.persisted = persisted;
    }

    /// A node's settings (defaults for a node never changed).
    pub fn settings(&self, id: &str) -> Settings {
        self.persisted.settings.get(id).cloned().unwrap_or_default()
    }

    fn view(&self, id: &str, e: &Entry, now: Instant) -> NodeView {
        let settings = self.settings(id);
        NodeView {
            name: settings.name.clone().unwrap_or_else(|| e.info.name.clone()),
            info: e.info.clone(),
            online: e.online,
            last_seen_ms: e
                .last_seen
                .map_or(u64::MAX, |t| now.saturating_duration_since(t).as_millis() as u64),
            state: e.state.clone(),
            settings,
        }
    }

    /// Every node, online or lost.
    pub fn nodes(&self, now: Instant) -> Vec<NodeView> {
        self.nodes.iter().map(|(id, e)| self.view(id, e, now)).collect()
    }

    /// One node.
    pub fn node(&self, id: &str, now: Instant) -> Result<NodeView, RegistryError> {
        let e = self.nodes.get(id).ok_or_else(|| RegistryError::NoNode(id.to_owned()))?;
        Ok(self.view(id, e, now))
    }

    /// Every zone.
    pub fn zones(&self) -> Vec<Zone> {
        self.persisted.zones.values().cloned().collect()
    }

    /// A node connected: returns its settings (to apply) and the event.
    pub fn connect(&mut self, mut info: NodeInfo, now: Instant) -> (Settings, Event) {
        info.name = display_name(&info.name);
        let id = info.id.clone();
        self.persisted.known.insert(id.clone(), info.clone());
        let e = self.nodes.entry(id.clone()).or_insert(Entry {
            info: info.clone(),
            state: NodeState::default(),
            last_seen: None,
            online: false,
            health: VecDeque::new(),
        });
        e.info = info;
        e.online = true;
        e.last_seen = Some(now);
        let settings = self.settings(&id);
        let view = self.node(&id, now).expect("just inserted");
        (settings, Event::NodeOnline { node: Box::new(view) })
    }

    /// A node reported its state.
    pub fn report(&mut self, id: &str, state: NodeState, now: Instant) -> Option<Event> {
        let e = self.nodes.get_mut(id)?;
        e.last_seen = Some(now);
        e.online = true;
        let (concealed, underruns) =
            (rise(e.state.concealed, state.concealed), rise(e.state.underruns, state.underruns));
        if e.health.back().is_none_or(|m| now.saturating_duration_since(m.start) >= MINUTE) {
            if e.health.len() == HEALTH_MINUTES {
                e.health.pop_front();
            }
            let m = Minute {
                start: now,
                offset: None,
                jitter_max: None,
                concealed: 0,
                underruns: 0,
                reports: 0,
            };
            e.health.push_back(m);
        }
        if let Some(m) = e.health.back_mut() {
            m.concealed += concealed;
            m.underruns += underruns;
            m.reports += 1;
            if let Some(o) = state.offset_us.filter(|o| o.is_finite()) {
                m.offset = Some(m.offset.map_or((o, o), |(lo, hi)| (lo.min(o), hi.max(o))));
            }
            if let Some(j) = state.jitter_ms.filter(|j| j.is_finite()) {
                m.jitter_max = Some(m.jitter_max.map_or(j, |x| x.max(j)));
            }
        }
        let changed = e.state != state;
        e.state = state.clone();
        changed.then(|| Event::NodeState { id: id.to_owned(), state: Box::new(state) })
    }

    /// Each node's last hour, a minute each (newest last), by id.
    pub fn health(&self, now: Instant) -> BTreeMap<String, Vec<HealthMinute>> {
        self.nodes
            .iter()
            .map(|(id, e)| {
                let minutes = e
                    .health
                    .iter()
                    .map(|m| HealthMinute {
                        ago_min: (now.saturating_duration_since(m.start).as_secs() / 60) as u32,
                        offset_min_us: m.offset.map(|o| o.0),
                        offset_max_us: m.offset.map(|o| o.1),
                        jitter_max_ms: m.jitter_max,
                        concealed: m.concealed,
                        underruns: m.underruns,
                        reports: m.reports,
                    })
                    .filter(|m| (m.ago_min as usize) < HEALTH_MINUTES)
                    .collect();
                (id.clone(), minutes)
            })
            .collect()
    }

    /// A node's link closed.
    pub fn disconnect(&mut self, id: &str) -> Option<Event> {
        let e = self.nodes.get_mut(id)?;
        let was = std::mem::replace(&mut e.online, false);
        was.then(|| Event::NodeLost { id: id.to_owned() })
    }

    /// Marks nodes silent for [`LOST_AFTER`] as lost.
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for (id, e) in &mut self.nodes {
            if e.online && e.last_seen.is_none_or(|t| now.saturating_duration_since(t) > LOST_AFTER)
            {
                e.online = false;
                events.push(Event::NodeLost { id: id.clone() });
            }
        }
        events
    }

    /// Changes a node's settings: returns the commands for it and the events.
    pub fn patch(
        &mut self,
        id: &str,
        patch: SettingsPatch,
    ) -> Result<(Vec<Command>, Vec<Event>), RegistryError> {
        if !self.nodes.contains_key(id) {
            return Err(RegistryError::NoNode(id.to_owned()));
        }
        if let Some(v) = patch.volume
            && !(0.0..=100.0).contains(&v)
        {
            return Err(RegistryError::Invalid {
                field: "volume",
                message: format!("{v} is outside 0–100 (percent)"),
            });
        }
        if let Some(d) = patch.delay_ms
            && !(-1000.0..=1000.0).contains(&d)
        {
            return Err(RegistryError::Invalid {
                field: "delay_ms",
                message: format!("{d} is outside −1000 to +1000 ms"),
            });
        }
        let mut settings = self.settings(id);
        let mut commands = Vec::new();
        let mut events = Vec::new();
        if let Some(n) = patch.name {
            let n = display_name(&n);
            settings.name = (!n.is_empty()).then_some(n);
        }
        if let Some(v) = patch.volume
            && v != settings.volume
        {
            settings.volume = v;
            commands.push(Command::Volume { percent: v, at: None });
        }
        if let Some(m) = patch.mute
            && m != settings.mute
        {
            settings.mute = m;
            commands.push(Command::Mute { mute: m, at: None });
        }
        if let Some(d) = patch.delay_ms
            && d != settings.delay_ms
        {
            settings.delay_ms = d;
            commands.push(Command::Delay { ms: d });
        }
        if let Some(z) = patch.zone {
            let z = z.trim().to_owned();
            if z.is_empty() {
                settings.zone = None;
            } else {
                if !self.persisted.zones.contains_key(&z) {
                    let zone = Zone { name: z.clone(), ..Zone::default() };
                    self.persisted.zones.insert(z.clone(), zone.clone());
                    events.push(Event::ZoneChanged { zone });
                }
                // Moved into a zone that plays something: play it.
                if settings.zone.as_deref() != Some(z.as_str())
                    && let Some(route) = self.persisted.zones.get(&z).and_then(route_of)
                {
                    commands.push(route);
                }
                settings.zone = Some(z);
            }
        }
        self.persisted.settings.insert(id.to_owned(), settings.clone());
        events.push(Event::NodeSettings { id: id.to_owned(), settings });
        Ok((commands, events))
    }

    /// The nodes set in zone `name`, with their settings.
    fn members<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a String, &'a Settings)> {
        self.persisted.settings.iter().filter(move |(_, s)| s.zone.as_deref() == Some(name))
    }

    /// The stream frame a zone's players play at `now` (extrapolated from the latest report
    /// of one of them: they all play the same frame at the same instant).
    pub fn zone_position(&self, name: &str, now: Instant) -> Option<u64> {
        self.zone_clock(name).map(|(seen, position, rate)| {
            let elapsed = now.saturating_duration_since(seen).as_secs_f64();
            position + (elapsed * f64::from(rate)).round() as u64
        })
    }

    /// The latest report of a zone's players' stream position: when it came, the frame, and
    /// the stream's rate.
    pub fn zone_clock(&self, name: &str) -> Option<(Instant, u64, u32)> {
        self.members(name)
            .filter_map(|(id, _)| {
                let e = self.nodes.get(id).filter(|e| e.online)?;
                let (position, rate, seen) = (e.state.position?, e.state.rate?, e.last_seen?);
                Some((seen, position, rate))
            })
            .max_by_key(|(seen, ..)| *seen)
    }

    /// A zone's online players that can `capability`, by name: (id, name, delay ms).
    pub fn zone_players(
        &self,
        name: &str,
        capability: &str,
    ) -> Result<Vec<(String, String, f64)>, RegistryError> {
        if !self.persisted.zones.contains_key(name) {
            return Err(RegistryError::NoZone(name.to_owned()));
        }
        let mut players: Vec<_> = self
            .members(name)
            .filter_map(|(id, s)| {
                let e = self.nodes.get(id).filter(|e| e.online)?;
                e.info.capabilities.iter().any(|c| c == capability).then(|| {
                    (id.clone(), s.name.clone().unwrap_or_else(|| e.info.name.clone()), s.delay_ms)
                })
            })
            .collect();
        players.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        Ok(players)
    }

    /// Adds `record` to node `id`'s calibration history (the oldest go beyond [`HISTORY`]).
    pub fn record_calibration(&mut self, id: &str, record: CalibrationRecord) {
        let history = self.persisted.calibrations.entry(id.to_owned()).or_default();
        history.push_back(record);
        while history.len() > HISTORY {
            history.pop_front();
        }
    }

    /// Node `id`'s calibration history, oldest first.
    pub fn calibration_history(&self, id: &str) -> Result<Vec<CalibrationRecord>, RegistryError> {
        if !self.nodes.contains_key(id) && !self.persisted.known.contains_key(id) {
            return Err(RegistryError::NoNode(id.to_owned()));
        }
        Ok(self
            .persisted
            .calibrations
            .get(id)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default())
    }

    /// A node's latest calibration record, if any.
    pub fn latest_calibration(&self, id: &str) -> Option<CalibrationRecord> {
        self.persisted.calibrations.get(id).and_then(|h| h.back().cloned())
    }

    /// A command for every player of a zone. Volume and mute change their settings and are
    /// scheduled on one stream frame [`ZONE_LEAD`] ahead, so they land on the same sample on
    /// every player; resync and identify go to each at once. Returns the commands per node
    /// and the events.
    pub fn zone_command(
        &mut self,
        name: &str,
        command: &Command,
        now: Instant,
    ) -> Result<(Vec<(String, Command)>, Vec<Event>), RegistryError> {
        if !self.persisted.zones.contains_key(name) {
            return Err(RegistryError::NoZone(name.to_owned()));
        }
        let members: Vec<String> = self.members(name).map(|(id, _)| id.clone()).collect();
        let at = self.zone_position(name, now).map(|p| {
            let rate = self
                .nodes
                .values()
                .find_map(|e| e.state.rate.filter(|_| e.online))
                .unwrap_or(48_000);
            p + (ZONE_LEAD.as_secs_f64() * f64::from(rate)) as u64
        });
        let (patch, scheduled) = match command {
            Command::Volume { percent, .. } => (
                SettingsPatch { volume: Some(*percent), ..SettingsPatch::default() },
                Command::Volume { percent: *percent, at },
            ),
            Command::Mute { mute, .. } => (
                SettingsPatch { mute: Some(*mute), ..SettingsPatch::default() },
                Command::Mute { mute: *mute, at },
            ),
            Command::Resync | Command::Identify => {
                let commands = members.into_iter().map(|id| (id, command.clone())).collect();
                return Ok((commands, Vec::new()));
            }
            _ => {
                return Err(RegistryError::Invalid {
                    field: "kind",
                    message: "a zone takes volume, mute, resync or identify".into(),
                });
            }
        };
        let mut commands = Vec::new();
        let mut events = Vec::new();
        for id in members {
            let (cmds, evs) = self.patch(&id, patch.clone())?;
            events.extend(evs);
            if !cmds.is_empty() {
                commands.push((id, scheduled.clone()));
            }
        }
        Ok((commands, events))
    }

    /// What a node in a routed zone must play (sent when it connects).
    pub fn route_for(&self, id: &str) -> Option<Command> {
        let zone = self.persisted.settings.get(id)?.zone.as_ref()?;
        route_of(self.persisted.zones.get(zone)?)
    }

    /// The players of a zone, with what it now plays (after [`put_zone`](Self::put_zone)).
    pub fn zone_routes(&self, name: &str) -> Vec<(String, Command)> {
        let Some(route) = self.persisted.zones.get(name).and_then(route_of) else {
            return Vec::new();
        };
        self.members(name).map(|(id, _)| (id.clone(), route.clone())).collect()
    }

    /// Creates or changes a zone.
    pub fn put_zone(&mut self, zone: Zone) -> Result<Event, RegistryError> {
        if zone.name.trim().is_empty() {
            return Err(RegistryError::Invalid {
                field: "name",
                message: "a zone needs a name, e.g. \"kitchen\"".into(),
            });
        }
        if let Some(l) = zone.latency_ms
            && !(10.0..=5000.0).contains(&l)
        {
            return Err(RegistryError::Invalid {
                field: "latency_ms",
                message: format!("{l} is outside 10–5000 ms"),
            });
        }
        if let Some(s) = &zone.source
            && let Err(why) = check_source(s)
        {
            return Err(RegistryError::Invalid {
                field: "source",
                message: format!(
                    "`{s}` is not a source address ({why}): host:port, e.g. \"192.168.1.10:7400\""
                ),
            });
        }
        self.persisted.zones.insert(zone.name.clone(), zone.clone());
        Ok(Event::ZoneChanged { zone })
    }

    /// Removes a zone (its players stay, in no zone).
    pub fn delete_zone(&mut self, name: &str) -> Result<Vec<Event>, RegistryError> {
        self.persisted.zones.remove(name).ok_or_else(|| RegistryError::NoZone(name.to_owned()))?;
        let mut events = vec![Event::ZoneRemoved { name: name.to_owned() }];
        for (id, s) in &mut self.persisted.settings {
            if s.zone.as_deref() == Some(name) {
                s.zone = None;
                events.push(Event::NodeSettings { id: id.clone(), settings: s.clone() });
            }
        }
        Ok(events)
    }
}

/// The command that makes a player play a zone's source.
fn route_of(zone: &Zone) -> Option<Command> {
    Some(Command::Route { source: zone.source.clone()?, latency_ms: zone.latency_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_map_keeps_an_hour_of_minutes_with_what_each_minute_lost() {
        let mut r = Registry::default();
        let t0 = Instant::now();
        let info = NodeInfo { id: "p".into(), role: "player".into(), ..Default::default() };
        r.connect(info, t0);
        let report = |concealed, underruns, offset, jitter| NodeState {
            concealed,
            underruns,
            offset_us: Some(offset),
            jitter_ms: Some(jitter),
            ..Default::default()
        };
        // Four reports a second for 90 minutes: the offset wanders ±3 µs, and in minute 70
        // (20 minutes before the end) ten packets are concealed; at minute 80 the node
        // restarts (its counters start again from zero).
        let mut concealed = 0;
        for q in 0..90 * 60 * 4 {
            let t = t0 + Duration::from_millis(250 * q);
            let minute = q / 240;
            if minute == 70 && q % 24 == 0 {
                concealed += 1;
            }
            if minute == 80 && q % 240 == 0 {
                concealed = 0;
            }
            // Jitter 0.2 ms, with one report of 4 ms in minute 75.
            let jitter = if minute == 75 && q % 240 == 100 { 4.0 } else { 0.2 };
            r.report("p", report(concealed, 0, (q % 7) as f64 - 3.0, jitter), t);
        }
        let now = t0 + Duration::from_secs(90 * 60 - 1);
        let h = &r.health(now)["p"];
        assert_eq!(h.len(), HEALTH_MINUTES, "an hour, no more");
        assert_eq!(h.last().unwrap().ago_min, 0);
        assert_eq!(h.first().unwrap().ago_min, 59);
        assert!(h.iter().all(|m| m.reports == 240), "{h:?}");
        assert!(h.iter().all(|m| m.offset_spread_us() == Some(6.0)));
        let jittery: Vec<u32> =
            h.iter().filter(|m| m.jitter_max_ms != Some(0.2)).map(|m| m.ago_min).collect();
        assert_eq!(jittery, vec![14], "the worst jitter of each minute is kept");
        assert_eq!(h[45].jitter_max_ms, Some(4.0));
        let lost: Vec<(u32, u64)> =
            h.iter().filter(|m| m.concealed > 0).map(|m| (m.ago_min, m.concealed)).collect();
        assert_eq!(
            lost,
            vec![(19, 10)],
            "the minute that lost packets, and nothing from the restart"
        );
    }

    #[test]
    fn zone_sources_must_be_addresses_a_player_can_use() {
        for good in ["192.168.1.10:7400", "[fe80::1]:7400", "hub.lan:7400", "living-room:1"] {
            assert_eq!(check_source(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("999.1.1.1:99999", "port"),
            ("999.1.1.1:7400", "IPv4"),
            ("nowhere", "port"),
            (":7400", "host"),
            ("host:0", "port"),
            ("bad host:7400", "host name"),
            ("fe80::1:7400", "IPv6"),
        ] {
            let e = check_source(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn names_are_bounded_and_lose_controls_and_bidi_overrides() {
        assert_eq!(display_name("  Kitchen  "), "Kitchen");
        assert_eq!(display_name("Kit\0chen\x1b[31m"), "Kitchen[31m");
        assert_eq!(display_name("\u{202E}nehctik"), "nehctik");
        assert_eq!(display_name(&"x".repeat(1_000)).chars().count(), MAX_NAME);
        let mut r = Registry::default();
        let info =
            NodeInfo { id: "n1".into(), name: "\u{2066}Evil\0".into(), ..NodeInfo::default() };
        r.connect(info, Instant::now());
        assert_eq!(r.nodes(Instant::now())[0].info.name, "Evil");
    }

    fn info(id: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            name: format!("{id} speaker"),
            role: "player".into(),
            device: "null".into(),
            capabilities: vec!["volume".into()],
            address: "127.0.0.1:7401".into(),
            streams: Vec::new(),
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn nodes_come_go_and_are_not_forgotten() {
        let t = Instant::now();
        let mut r = Registry::default();
        r.connect(info("kitchen"), t);
        assert!(r.node("kitchen", t).unwrap().online);
        let state = NodeState { streaming: true, offset_us: Some(3.0), ..NodeState::default() };
        assert!(r.report("kitchen", state.clone(), t).is_some());
        assert!(r.report("kitchen", state, t).is_none(), "no event without a change");
        assert!(r.expire(t + Duration::from_secs(1)).is_empty());
        assert_eq!(
            r.expire(t + Duration::from_secs(3)),
            vec![Event::NodeLost { id: "kitchen".into() }]
        );
        let v = r.node("kitchen", t + Duration::from_secs(3)).unwrap();
        assert!(!v.online && v.last_seen_ms == 3000);
    }

    #[test]
    fn patches_are_checked_persisted_and_become_commands() {
        let t = Instant::now();
        let mut r = Registry::default();
        r.connect(info("den"), t);
        let err = r
            .patch("den", SettingsPatch { volume: Some(140.0), ..Default::default() })
            .unwrap_err();
        assert!(err.to_string().contains("volume"), "{err}");
        assert!(matches!(
            r.patch("attic", SettingsPatch::default()),
            Err(RegistryError::NoNode(_))
        ));
        let (cmds, events) = r
            .patch(
                "den",
                SettingsPatch {
                    volume: Some(40.0),
                    delay_ms: Some(-12.5),
                    zone: Some("upstairs".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            cmds,
            vec![Command::Volume { percent: 40.0, at: None }, Command::Delay { ms: -12.5 }]
        );
        assert!(events.iter().any(|e| matches!(e, Event::ZoneChanged { .. })));
        // A restarted hub gives the node its settings back when it reconnects.
        let mut again = Registry::new(r.persisted().clone());
        assert!(!again.node("den", t).unwrap().online, "listed, lost, before it reconnects");
        let (settings, _) = again.connect(info("den"), t);
        assert_eq!((settings.volume, settings.delay_ms), (40.0, -12.5));
        assert_eq!(settings.zone.as_deref(), Some("upstairs"));
        // Removing the zone frees its players.
        again.delete_zone("upstairs").unwrap();
        assert_eq!(again.node("den", t).unwrap().settings.zone, None);
    }
}
