use std::{
    collections::BTreeMap,
    io::{self},
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{self, AtomicBool, AtomicU32},
        mpsc::{Receiver, Sender, TryRecvError},
    },
    task::{Context, Poll},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use futures::channel::oneshot;
use mio::net::UnixStream;

use crate::protocol::{self, DescriptorFlags};

use super::{ClientError, PlaybackSource, RecordSink};

type ReplyResult<'a> =
    Result<(&'a mut ReactorState, &'a mut dyn io::BufRead), protocol::PulseError>;
type ReplyHandler = Box<dyn FnOnce(ReplyResult<'_>) + Send + 'static>;

struct PlaybackStreamState {
    stream_info: protocol::CreatePlaybackStreamReply,
    source: Pin<Box<dyn PlaybackSource>>,

    requested_bytes: usize,
    done: bool,
    eof_notify: Option<oneshot::Sender<()>>,
    timing: Option<AutoTiming<protocol::PlaybackLatency>>,
}

pub(super) struct RecordStreamState {
    sink: Box<dyn RecordSink>,
    start_notify: Option<oneshot::Sender<()>>,
    timing: Option<AutoTiming<protocol::RecordLatency>>,
    /// Dropped with the stream's state: when the stream is deleted, or the connection lost.
    _closed: Option<oneshot::Sender<()>>,
}

/// What the reactor calls with a timing reply: the instant the request was written, and the
/// reply.
pub(super) type TimingCallback<T> = Box<dyn FnMut(Instant, T) + Send + 'static>;

/// Timing requests the reactor sends by itself (libpulse's `PA_STREAM_AUTO_TIMING_UPDATE`):
/// no thread of the client wakes to ask, and the reactor wakes once for the request and once
/// for the reply. The requests go out on the reactor's own timer, each `every` ± half of it at
/// random: a sink that renders in blocks reports a latency that is a sawtooth, and requests
/// locked to the stream's data (which the sink's rendering paces) would sample one phase of
/// it, a bias of up to half a block that differs from client to client.
struct AutoTiming<T> {
    every: Duration,
    /// When the next request is due; `None`: at the next chance.
    next: Option<Instant>,
    /// A request is on its way (one at a time); its reply handler clears it, whatever the
    /// reply.
    pending: Arc<AtomicBool>,
    on_reply: TimingCallback<T>,
}

impl<T> AutoTiming<T> {
    fn new(every: Duration, on_reply: TimingCallback<T>) -> Self {
        AutoTiming {
            every,
            next: None,
            pending: Arc::new(AtomicBool::new(false)),
            on_reply,
        }
    }

    /// When a request is due (`now` if at once), unless one is on its way.
    fn due(&self, now: Instant) -> Option<Instant> {
        if self.pending.load(atomic::Ordering::Relaxed) {
            return None;
        }
        Some(self.next.unwrap_or(now))
    }
}

/// A kind of stream whose timing the reactor asks for by itself.
trait Timed: Sized + 'static {
    /// The timing reply.
    type Reply: protocol::CommandReply + Send + 'static;

    /// The reactor's streams of this kind, and its reply handlers.
    fn split(
        state: &mut ReactorState,
    ) -> (&mut BTreeMap<u32, Self>, &mut BTreeMap<u32, ReplyHandler>);

    /// Its automatic timing, if set.
    fn slot(&mut self) -> &mut Option<AutoTiming<Self::Reply>>;

    /// Whether it still takes timing requests (a draining playback stream does not).
    fn asks(&self) -> bool {
        true
    }

    /// The timing request for stream `channel`.
    fn request(channel: u32) -> protocol::Command;

    /// Stream `channel`'s automatic timing in `state`.
    fn timing_of(state: &mut ReactorState, channel: u32) -> Option<&mut AutoTiming<Self::Reply>> {
        Self::split(state)
            .0
            .get_mut(&channel)
            .and_then(|s| s.slot().as_mut())
    }
}

impl Timed for PlaybackStreamState {
    type Reply = protocol::PlaybackLatency;

    fn split(
        state: &mut ReactorState,
    ) -> (&mut BTreeMap<u32, Self>, &mut BTreeMap<u32, ReplyHandler>) {
        (&mut state.playback_streams, &mut state.handlers)
    }

    fn slot(&mut self) -> &mut Option<AutoTiming<Self::Reply>> {
        &mut self.timing
    }

    fn asks(&self) -> bool {
        !self.done
    }

    fn request(channel: u32) -> protocol::Command {
        protocol::Command::GetPlaybackLatency(protocol::LatencyParams {
            channel,
            now: SystemTime::now(),
        })
    }
}

impl Timed for RecordStreamState {
    type Reply = protocol::RecordLatency;

    fn split(
        state: &mut ReactorState,
    ) -> (&mut BTreeMap<u32, Self>, &mut BTreeMap<u32, ReplyHandler>) {
        (&mut state.record_streams, &mut state.handlers)
    }

    fn slot(&mut self) -> &mut Option<AutoTiming<Self::Reply>> {
        &mut self.timing
    }

    fn request(channel: u32) -> protocol::Command {
        protocol::Command::GetRecordLatency(protocol::LatencyParams {
            channel,
            now: SystemTime::now(),
        })
    }
}

impl<T: protocol::CommandReply + Send + 'static> AutoTiming<T> {
    /// If a request is due and nothing else waits to be written, encodes stream `channel`'s
    /// timing request (of kind `S`) into `buf` and installs the handler that gives its reply
    /// to `on_reply`; the next request is then due `every` × `dither` (0.5–1.5) later.
    fn ask<S: Timed<Reply = T>>(
        &mut self,
        channel: u32,
        buf: &mut Vec<u8>,
        handlers: &mut BTreeMap<u32, ReplyHandler>,
        seq: &AtomicU32,
        protocol_version: u16,
        dither: f64,
    ) {
        let now = Instant::now();
        // A command message is encoded from the buffer's start.
        if self.due(now).is_none_or(|due| due > now) || !buf.is_empty() {
            return;
        }
        let (seq, cmd) = (
            seq.fetch_add(1, atomic::Ordering::Relaxed),
            S::request(channel),
        );
        log::debug!("CLIENT [{seq}]: {cmd:?}");
        if protocol::encode_command_message(&mut *buf, seq, &cmd, protocol_version).is_err() {
            buf.clear();
            return;
        }
        self.next = Some(now + self.every.mul_f64(dither));
        self.pending.store(true, atomic::Ordering::Relaxed);
        let pending = self.pending.clone();
        handlers.insert(
            seq,
            Box::new(move |res: ReplyResult<'_>| {
                pending.store(false, atomic::Ordering::Relaxed);
                let Ok((state, buf)) = res else { return };
                let Ok(reply) = read_tagstruct::<T>(buf, protocol_version) else {
                    return;
                };
                if let Some(t) = S::timing_of(state, channel) {
                    (t.on_reply)(now, reply);
                }
            }),
        );
    }
}

#[derive(Default)]
struct ReactorState {
    handlers: BTreeMap<u32, ReplyHandler>,
    playback_streams: BTreeMap<u32, PlaybackStreamState>,
    record_streams: BTreeMap<u32, RecordStreamState>,
}

struct SharedState {
    protocol_version: u16,
    next_seq: Arc<AtomicU32>,
    _thread_handle: JoinHandle<super::Result<()>>,
}

// We need to wrap this to implement futures::task::ArcWake.
struct Waker(mio::Waker);

impl futures::task::ArcWake for Waker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        let _ = arc_self.0.wake();
    }
}

#[derive(Clone)]
pub(super) struct ReactorHandle {
    state: Weak<Mutex<ReactorState>>,
    shared: Arc<SharedState>,
    outgoing: Sender<(u32, protocol::Command)>,
    waker: Arc<Waker>,
}

impl ReactorHandle {
    pub(super) async fn roundtrip_reply<R: protocol::CommandReply + Send + 'static>(
        &self,
        cmd: protocol::Command,
    ) -> Result<R, ClientError> {
        let seq = self.next_seq();

        // Install a handler for the sequence number.
        let (tx, rx) = oneshot::channel();
        let protocol_version = self.shared.protocol_version;
        self.install_handler(seq, move |res: ReplyResult<'_>| {
            let _ = match res {
                Ok((_, buf)) => tx.send(read_tagstruct(buf, protocol_version)),
                Err(err) => tx.send(Err(ClientError::ServerError(err))),
            };
        })?;

        // Send the message.
        self.write_command(seq, cmd)?;

        // Wait for the response.
        rx.await.map_err(|_| ClientError::Disconnected)?
    }

    pub(super) async fn roundtrip_ack(&self, cmd: protocol::Command) -> Result<(), ClientError> {
        let seq = self.next_seq();

        // Install a handler for the sequence number.
        let (tx, rx) = oneshot::channel();
        self.install_handler(seq, move |res: ReplyResult<'_>| {
            let _ = match res {
                Ok(_) => tx.send(Ok(())),
                Err(err) => tx.send(Err(ClientError::ServerError(err))),
            };
        })?;

        // Send the message.
        self.write_command(seq, cmd)?;

        // Wait for the response.
        rx.await.map_err(|_| ClientError::Disconnected)?
    }

    pub(super) async fn insert_playback_stream(
        &self,
        params: protocol::PlaybackStreamParams,
        source: impl PlaybackSource,
        eof_notify: Option<oneshot::Sender<()>>,
    ) -> Result<protocol::CreatePlaybackStreamReply, ClientError> {
        // This is the seq for the CreatePlaybackStream command.
        let seq = self.next_seq();

        let protocol_version = self.shared.protocol_version;
        let handler = move |res: ReplyResult<'_>| {
            let (state, buf) = res.map_err(ClientError::ServerError)?;
            let stream_info: protocol::CreatePlaybackStreamReply =
                read_tagstruct(buf, protocol_version)?;

            let requested_bytes = stream_info.requested_bytes as usize;
            state.playback_streams.insert(
                stream_info.channel,
                PlaybackStreamState {
                    stream_info: stream_info.clone(),
                    source: Box::pin(source),

                    requested_bytes,
                    done: false,
                    eof_notify,
                    timing: None,
                },
            );

            Ok(stream_info)
        };

        let (tx, rx) = oneshot::channel();
        self.install_handler(seq, move |res: ReplyResult<'_>| {
            let _ = tx.send(handler(res));
        })?;

        // Send the message.
        self.write_command(seq, protocol::Command::CreatePlaybackStream(params))?;

        // Wait for the response.
        rx.await.map_err(|_| ClientError::Disconnected)?
    }

    pub(super) async fn delete_playback_stream(&self, channel: u32) -> Result<(), ClientError> {
        let seq = self.next_seq();

        let (tx, rx) = oneshot::channel();
        self.install_handler(seq, move |res| {
            if let Ok((state, _ack)) = res {
                state.playback_streams.remove(&channel);
            }

            let _ = tx.send(());
        })?;

        self.write_command(seq, protocol::Command::DeletePlaybackStream(channel))?;
        rx.await.map_err(|_| ClientError::Disconnected)
    }

    pub(super) fn mark_playback_stream_draining(&self, channel: u32) {
        if let Some(state) = self.state.upgrade()
            && let Some(stream) = state.lock().unwrap().playback_streams.get_mut(&channel)
        {
            stream.done = true;
        }
    }

    pub(super) async fn insert_record_stream(
        &self,
        params: protocol::RecordStreamParams,
        sink: impl RecordSink,
        start_notify: Option<oneshot::Sender<()>>,
        closed: Option<oneshot::Sender<()>>,
    ) -> Result<protocol::CreateRecordStreamReply, ClientError> {
        let seq = self.next_seq();

        let protocol_version = self.shared.protocol_version;
        let handler = move |res: ReplyResult<'_>| {
            let (state, buf) = res.map_err(ClientError::ServerError)?;
            let stream_info: protocol::CreateRecordStreamReply =
                read_tagstruct(buf, protocol_version)?;

            state.record_streams.insert(
                stream_info.channel,
                RecordStreamState {
                    sink: Box::new(sink),
                    start_notify,
                    timing: None,
                    _closed: closed,
                },
            );

            Ok(stream_info)
        };

        let (tx, rx) = oneshot::channel();
        self.install_handler(seq, move |res: ReplyResult<'_>| {
            let _ = tx.send(handler(res));
        })?;

        // Send the message.
        self.write_command(seq, protocol::Command::CreateRecordStream(params))?;

        // Wait for the response.
        rx.await.map_err(|_| ClientError::Disconnected)?
    }

    pub(super) async fn delete_record_stream(&self, channel: u32) -> Result<(), ClientError> {
        let seq = self.next_seq();

        let (tx, rx) = oneshot::channel();
        self.install_handler(seq, move |res| {
            if let Ok((state, _ack)) = res {
                state.record_streams.remove(&channel);
            }

            let _ = tx.send(());
        })?;

        self.write_command(seq, protocol::Command::DeleteRecordStream(channel))?;
        rx.await.map_err(|_| ClientError::Disconnected)
    }

    /// Has the reactor ask for stream `channel`'s timing (a stream of kind `S`) about every
    /// `every` (and at once), calling `on_reply` with each reply.
    fn set_timing<S: Timed>(
        &self,
        channel: u32,
        every: Duration,
        on_reply: TimingCallback<S::Reply>,
    ) -> Result<(), ClientError> {
        let state = self.state.upgrade().ok_or(ClientError::Disconnected)?;
        let mut state = state.lock().unwrap();
        let stream = S::split(&mut state)
            .0
            .get_mut(&channel)
            .ok_or(ClientError::Disconnected)?;
        *stream.slot() = Some(AutoTiming::new(every, on_reply));
        Ok(())
    }

    /// Has the reactor ask for a playback stream's timing about every `every` (and at once),
    /// calling `on_reply` with each reply.
    pub(super) fn set_playback_timing(
        &self,
        channel: u32,
        every: Duration,
        on_reply: TimingCallback<protocol::PlaybackLatency>,
    ) -> Result<(), ClientError> {
        self.set_timing::<PlaybackStreamState>(channel, every, on_reply)
    }

    /// Has the reactor ask for a record stream's timing about every `every` (and at once),
    /// calling `on_reply` with each reply.
    pub(super) fn set_record_timing(
        &self,
        channel: u32,
        every: Duration,
        on_reply: TimingCallback<protocol::RecordLatency>,
    ) -> Result<(), ClientError> {
        self.set_timing::<RecordStreamState>(channel, every, on_reply)
    }

    /// Asks for stream `channel`'s timing (a stream of kind `S`) at the next chance (after a
    /// cork or an uncork).
    fn timing_now<S: Timed>(&self, channel: u32) {
        if let Some(state) = self.state.upgrade()
            && let Some(t) = S::timing_of(&mut state.lock().unwrap(), channel)
        {
            t.next = None;
        }
        // The reactor sleeps without a timeout until something happens: wake it to ask.
        let _ = self.waker.0.wake();
    }

    /// Asks for a playback stream's timing at the next chance.
    pub(super) fn playback_timing_now(&self, channel: u32) {
        self.timing_now::<PlaybackStreamState>(channel);
    }

    /// Asks for a record stream's timing at the next chance.
    pub(super) fn record_timing_now(&self, channel: u32) {
        self.timing_now::<RecordStreamState>(channel);
    }

    fn write_command(&self, seq: u32, cmd: protocol::Command) -> Result<(), ClientError> {
        self.outgoing
            .send((seq, cmd))
            .map_err(|_| ClientError::Disconnected)?;
        self.waker.0.wake()?;

        Ok(())
    }

    fn install_handler<F>(&self, seq: u32, handler: F) -> Result<(), ClientError>
    where
        F: FnOnce(ReplyResult<'_>) + Send + 'static,
    {
        self.state
            .upgrade()
            .ok_or(ClientError::Disconnected)?
            .lock()
            .unwrap()
            .handlers
            .insert(seq, Box::new(handler));

        Ok(())
    }

    fn next_seq(&self) -> u32 {
        self.shared.next_seq.fetch_add(1, atomic::Ordering::Relaxed)
    }
}

pub(super) const WAKER: mio::Token = mio::Token(0);
pub(super) const SOCKET: mio::Token = mio::Token(1);

pub(super) struct Reactor {
    socket: UnixStream,
    poll: mio::Poll,
    waker: Arc<Waker>,
    state: Arc<Mutex<ReactorState>>,
    outgoing: Receiver<(u32, protocol::Command)>,
    protocol_version: u16,
    next_seq: Arc<AtomicU32>,
    /// xorshift64 state for the timing requests' dither.
    dither: u64,

    write_buf: Vec<u8>,
    read_buf: Vec<u8>,
    read_scratch: Vec<u8>,
    in_progress_read: Option<protocol::Descriptor>,
}

impl Reactor {
    pub(super) fn spawn(
        mut socket: UnixStream,
        protocol_version: u16,
    ) -> Result<ReactorHandle, ClientError> {
        let poll = mio::Poll::new()?;
        let waker = Arc::new(Waker(mio::Waker::new(poll.registry(), WAKER)?));
        // Readable only: a unix socket reports writable (edge-triggered) every time the
        // server reads what was written, a wake-up per write for nothing. Writable interest
        // is added only while a write is pending (see `run`).
        poll.registry()
            .register(&mut socket, SOCKET, mio::Interest::READABLE)?;

        let state = Arc::new(Mutex::new(ReactorState::default()));

        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let next_seq = Arc::new(AtomicU32::new(1024));
        let mut reactor = Self {
            socket,
            poll,
            waker: waker.clone(),
            state: state.clone(),
            outgoing: cmd_rx,
            protocol_version,
            next_seq: next_seq.clone(),
            dither: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
                | 1,

            write_buf: Vec::new(),
            read_buf: Vec::new(),
            read_scratch: vec![0; 256 * 1024],
            in_progress_read: None,
        };

        let reactor_thread = std::thread::spawn(move || match reactor.run() {
            Ok(_) => Ok(()),
            Err(err) => {
                log::error!("Reactor error: {err}");
                Err(err)
            }
        });

        Ok(ReactorHandle {
            state: Arc::downgrade(&state),
            outgoing: cmd_tx,
            waker,
            shared: Arc::new(SharedState {
                protocol_version,
                next_seq,
                _thread_handle: reactor_thread,
            }),
        })
    }

    pub(super) fn run(&mut self) -> Result<(), ClientError> {
        let mut events = mio::Events::with_capacity(1024);
        let mut writable = false;

        loop {
            // epoll_wait fails with EINTR when a signal handler runs, and even without one
            // after the process was stopped and continued (SIGSTOP/SIGCONT, a debugger):
            // that is no reason to drop the connection and every stream on it.
            let timeout = self
                .next_timing()
                .map(|due| due.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            }
            self.recv()?;

            // Handle any requested writes.
            self.write_streams()?;
            self.ask_timing()?;
            self.write_commands()?;

            // Wait for the socket to take more only while something is left to write.
            let pending = !self.write_buf.is_empty();
            if pending != writable {
                let interest = if pending {
                    mio::Interest::READABLE | mio::Interest::WRITABLE
                } else {
                    mio::Interest::READABLE
                };
                self.poll
                    .registry()
                    .reregister(&mut self.socket, SOCKET, interest)?;
                writable = pending;
            }
        }
    }

    /// When the earliest timing request is due, if any, and the socket can take it (while a
    /// write is pending the reactor waits for the socket, not the clock).
    fn next_timing(&self) -> Option<Instant> {
        if !self.write_buf.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let playback = earliest::<PlaybackStreamState>(&mut state, now);
        let record = earliest::<RecordStreamState>(&mut state, now);
        playback.into_iter().chain(record).min()
    }

    /// Sends the timing requests that are due.
    fn ask_timing(&mut self) -> Result<(), ClientError> {
        let state = self.state.clone();
        let mut state = state.lock().unwrap();
        if self.ask_timing_of::<PlaybackStreamState>(&mut state)? {
            self.ask_timing_of::<RecordStreamState>(&mut state)?;
        }
        Ok(())
    }

    /// Sends the timing requests of streams of kind `S` that are due; `false` if the socket
    /// took no more.
    fn ask_timing_of<S: Timed>(&mut self, state: &mut ReactorState) -> Result<bool, ClientError> {
        let (streams, handlers) = S::split(state);
        for (&channel, stream) in streams.iter_mut() {
            if !stream.asks() {
                continue;
            }
            let Some(t) = stream.slot().as_mut() else {
                continue;
            };
            t.ask::<S>(
                channel,
                &mut self.write_buf,
                handlers,
                &self.next_seq,
                self.protocol_version,
                next_dither(&mut self.dither),
            );
            if !drain_buf(&mut self.write_buf, &mut self.socket)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn recv(&mut self) -> Result<(), ClientError> {
        use io::Read;

        'read: loop {
            // Read into a scratch buffer allocated (and zeroed) once: resizing `read_buf` by
            // 1 MiB of zeroes before every read cost a 1 MiB memset per wake-up, most of a
            // low-latency stream's CPU.
            match self.socket.read(&mut self.read_scratch) {
                Ok(0) => return Err(ClientError::Disconnected),
                Ok(n) => self.read_buf.extend_from_slice(&self.read_scratch[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(());
                }
                Err(err) => return Err(err.into()),
            };

            // Decode messages (there may be multiple).
            while !self.read_buf.is_empty() {
                // Continue the previous read, if it was unfinished.
                let desc = if let Some(desc) = self.in_progress_read.take() {
                    desc
                } else if self.read_buf.len() >= protocol::DESCRIPTOR_SIZE {
                    protocol::read_descriptor(&mut io::Cursor::new(&self.read_buf))?
                } else {
                    log::trace!("very short read ({} bytes)", self.read_buf.len());
                    continue 'read;
                };

                // If we don't have all the message, poll until we do.
                let len = desc.length as usize + protocol::DESCRIPTOR_SIZE;
                if self.read_buf.len() < len {
                    self.in_progress_read = Some(desc);
                    log::trace!("partial read ({}/{} bytes)", self.read_buf.len(), len);
                    continue 'read;
                }

                if desc.channel == u32::MAX {
                    self.handle_command(len);
                } else {
                    // Stream data for a record stream.
                    let mut guard = self.state.lock().unwrap();
                    if let Some(stream) = guard.record_streams.get_mut(&desc.channel) {
                        log::trace!("reading {len} bytes from stream {}", desc.channel,);
                        if let Some(start_notify) = stream.start_notify.take() {
                            let _ = start_notify.send(());
                        }

                        stream
                            .sink
                            .write(&self.read_buf[protocol::DESCRIPTOR_SIZE..len]);
                    } else {
                        log::warn!("Received data for unknown record stream {}", desc.channel);
                    }
                }

                self.read_buf.drain(..len);
            }
        }
    }

    fn handle_command(&mut self, len: usize) {
        let mut cursor = io::Cursor::new(&self.read_buf[protocol::DESCRIPTOR_SIZE..len]);
        let (seq, cmd) =
            match protocol::Command::read_tag_prefixed(&mut cursor, self.protocol_version) {
                Ok((seq, cmd)) => (seq, cmd),
                Err(err) => {
                    log::error!("failed to read command message: {err}");
                    return;
                }
            };

        let mut state = self.state.lock().unwrap();

        log::debug!("SERVER [{}]: {cmd:?}", seq as i32);
        if matches!(cmd, protocol::Command::Reply | protocol::Command::Error(_)) {
            let Some(handler) = state.handlers.remove(&seq) else {
                log::warn!("no reply handler found for sequence {seq}");
                return;
            };

            match cmd {
                protocol::Command::Reply => handler(Ok((&mut state, &mut cursor))),
                protocol::Command::Error(err) => handler(Err(err)),
                _ => unreachable!(),
            }
            return;
        }

        match cmd {
            protocol::Command::Started(channel) => {
                if state.playback_streams.contains_key(&channel) {
                    log::debug!("stream started: {channel}");
                } else {
                    log::error!("unknown stream: {channel}");
                }
            }
            protocol::Command::Request(protocol::Request { channel, length }) => {
                if let Some(stream) = state.playback_streams.get_mut(&channel) {
                    stream.requested_bytes += length as usize;
                } else {
                    log::error!("unknown stream: {channel}");
                }
            }
            _ => log::debug!("ignoring unexpected command: {cmd:?}"),
        }
    }

    fn write_commands(&mut self) -> Result<(), ClientError> {
        loop {
            // Drain the write buffer...
            if !drain_buf(&mut self.write_buf, &mut self.socket)? {
                return Ok(());
            }

            // ...and encode new command messages into it.
            match self.outgoing.try_recv() {
                Ok((seq, cmd)) => {
                    log::debug!("CLIENT [{seq}]: {cmd:?}");
                    protocol::encode_command_message(
                        &mut self.write_buf,
                        seq,
                        &cmd,
                        self.protocol_version,
                    )?;
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(ClientError::Disconnected),
            };
        }
    }

    fn write_streams(&mut self) -> Result<(), ClientError> {
        if !drain_buf(&mut self.write_buf, &mut self.socket)? {
            return Ok(());
        }

        let mut state = self.state.lock().unwrap();
        for stream in state.playback_streams.values_mut() {
            if stream.done {
                continue;
            }

            while stream.requested_bytes > 0 {
                let requested = stream.requested_bytes;

                self.write_buf
                    .resize(protocol::DESCRIPTOR_SIZE + requested, 0);

                let waker = futures::task::waker(self.waker.clone());
                let mut cx = Context::from_waker(&waker);
                let buf = &mut self.write_buf[protocol::DESCRIPTOR_SIZE..];
                let len = match PlaybackSource::poll_read(stream.source.as_mut(), &mut cx, buf) {
                    Poll::Ready(0) => {
                        log::debug!(
                            "source for stream {} reached EOF",
                            stream.stream_info.channel
                        );

                        stream.done = true;
                        stream.eof_notify.take().map(|done| done.send(()));
                        self.write_buf.clear();
                        break;
                    }
                    Poll::Pending => {
                        self.write_buf.clear();
                        break;
                    }
                    Poll::Ready(n) => n,
                };

                let len = len.min(requested);
                if len == 0 {
                    log::debug!(
                        "callback for stream {} returned no data",
                        stream.stream_info.channel
                    );

                    self.write_buf.clear();
                    break;
                }

                log::trace!(
                    "writing {len} bytes to stream {} (requested {})",
                    stream.stream_info.channel,
                    stream.requested_bytes
                );

                self.write_buf.truncate(protocol::DESCRIPTOR_SIZE + len);
                stream.requested_bytes -= len;

                let desc = protocol::Descriptor {
                    length: len as u32,
                    channel: stream.stream_info.channel,
                    offset: 0,
                    flags: DescriptorFlags::empty(),
                };

                protocol::encode_descriptor(
                    (&mut self.write_buf[..protocol::DESCRIPTOR_SIZE])
                        .try_into()
                        .unwrap(),
                    &desc,
                );

                if !drain_buf(&mut self.write_buf, &mut self.socket)? {
                    return Ok(());
                }
            }
        }

        Ok(())
    }
}

/// When the earliest timing request of the streams of kind `S` is due (`now` if at once).
fn earliest<S: Timed>(state: &mut ReactorState, now: Instant) -> Option<Instant> {
    S::split(state)
        .0
        .values_mut()
        .filter(|s| s.asks())
        .filter_map(|s| s.slot().as_ref()?.due(now))
        .min()
}

/// A factor in 0.5..1.5 from a xorshift64 state (never zero), advancing it.
fn next_dither(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    0.5 + (*state >> 11) as f64 / (1u64 << 53) as f64
}

fn drain_buf(buf: &mut Vec<u8>, w: &mut impl io::Write) -> Result<bool, io::Error> {
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => buf.drain(..n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(err) => return Err(err),
        };
    }

    Ok(true)
}

fn read_tagstruct<R: protocol::CommandReply>(
    buf: &mut dyn io::BufRead,
    protocol_version: u16,
) -> Result<R, ClientError> {
    protocol::TagStructReader::new(buf, protocol_version)
        .read()
        .map_err(Into::into)
}
