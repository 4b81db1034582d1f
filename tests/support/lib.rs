//! The end-to-end test harness: a real Centralino node in-process, reached
//! only through real gRPC clients.
//!
//! [`TestNode::start`] starts a node exactly as the binary does (in-memory
//! coordination and archive, the node's actors, every gRPC service on a loopback port
//! chosen by the OS) and hands out typed clients. [`Desktop`] plays one agent
//! desktop over one `AgentDesktop.Session` stream. Nothing here sleeps for a
//! fixed time: every wait is for an event or a condition, bounded by
//! [`DEADLINE`], and a wait that runs out fails the test with what was seen.
//!
//! Events on a desktop stream interleave (state changes, offers, command
//! results); a [`Desktop`] keeps the events it was not asked for in a
//! backlog, so waiting for one kind of event never loses another.

pub mod cluster;
pub mod etcd;
pub mod outreach;

use std::collections::VecDeque;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use centralino_cluster::{MemoryArchive, MemoryCoordination, Mode, Node, NodeInfo, NodeOptions};
use centralino_core::RouterConfig;
use centralino_core::queue::QueueConfig;
use centralino_proto::v1 as pb;
use centralino_proto::v1::admin_client::AdminClient;
use centralino_proto::v1::agent_desktop_client::AgentDesktopClient;
use centralino_proto::v1::gateway_client::GatewayClient;
use pb::agent_command::Command;
use pb::agent_event::{CommandResult, Event, Offer};
use pb::history_event::Kind;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

/// How long any single wait may take before the test fails. Generous:
/// nothing in a healthy node takes more than milliseconds, but a loaded CI
/// machine must not turn a slow run into a failure.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often [`eventually`] re-checks its condition.
pub const POLL_EVERY: Duration = Duration::from_millis(10);

/// Largest response the test clients accept: an offer carries the whole
/// history, and the server may send up to this much.
pub const MAX_RESPONSE_BYTES: usize = centralino_server::MAX_RESPONSE_BYTES;

/// A running node and its gRPC server on `127.0.0.1:<port>`.
pub struct TestNode {
    pub addr: SocketAddr,
    /// The node itself, for what no API shows (e.g. its hub).
    pub node: Node,
    channel: Channel,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestNode {
    /// Starts a node with in-memory coordination and serves every service
    /// on a fresh loopback port. The first queue is the default queue.
    pub async fn start(router: RouterConfig, queues: Vec<QueueConfig>) -> TestNode {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the listener");
        let opts = NodeOptions {
            node: NodeInfo {
                id: format!("test-{}", addr.port()),
                advertise: addr.to_string(),
            },
            router,
            queues,
            rules: Vec::new(),
            lease_ttl: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
        };
        let node = Node::start(
            opts,
            Arc::new(MemoryCoordination::new()),
            Arc::new(MemoryArchive::new()),
            Mode::Standalone,
        )
        .await
        .expect("node starts");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(centralino_server::serve(
            listener,
            node.hub.clone(),
            centralino_server::Limits::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        // The listener is already bound, so connecting cannot race the
        // server task: the connection waits in the accept backlog.
        let channel = within("connecting to the node", endpoint(addr).connect())
            .await
            .expect("connect to the node");
        TestNode {
            addr,
            node,
            channel,
            stop,
            server,
        }
    }

    /// The node's address as a gRPC endpoint.
    pub fn endpoint(&self) -> Endpoint {
        endpoint(self.addr)
    }

    /// A channel to the node, shared by the clients below.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn gateway(&self) -> GatewayClient<Channel> {
        GatewayClient::new(self.channel())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(usize::MAX)
    }

    pub fn desktop_client(&self) -> AgentDesktopClient<Channel> {
        AgentDesktopClient::new(self.channel())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(usize::MAX)
    }

    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(usize::MAX)
    }

    /// Opens an agent desktop session and logs in; panics if refused.
    pub async fn login(&self, login: pb::agent_command::Login) -> Desktop {
        let agent = login.agent_id.clone();
        Desktop::try_login(self.desktop_client(), login)
            .await
            .unwrap_or_else(|s| panic!("login of {agent} refused: {s:?}"))
    }

    /// Stops serving (graceful: in-flight calls finish; close streams
    /// first), then shuts the node down in order.
    pub async fn shutdown(self) {
        let TestNode {
            node,
            channel,
            stop,
            server,
            ..
        } = self;
        drop(channel);
        let _ = stop.send(());
        match tokio::time::timeout(DEADLINE, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("server ended with an error: {e}"),
            Ok(Err(e)) => panic!("server task failed: {e}"),
            Err(_) => {
                panic!("server did not stop within {DEADLINE:?} of shutdown (a stream left open?)")
            }
        }
        within("node shutdown", node.shutdown()).await;
    }
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_timeout(DEADLINE)
        .tcp_nodelay(true)
}

/// Awaits `fut` for at most [`DEADLINE`]; a timeout fails the test naming `what`.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Polls `condition` until it holds; fails the test naming `what` if it
/// still does not after `deadline`.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_some(deadline, what, || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `probe` until it returns `Some`, and returns that value; fails the
/// test naming `what` if it still returns `None` after `deadline`.
pub async fn eventually_some<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() >= give_up {
            panic!("condition not met within {deadline:?}: {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A login with the given capacity and no skills (the test queues need none).
/// splitmix64: a small seeded generator, so a test's load can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

pub fn login(agent_id: &str, capacity: i32) -> pb::agent_command::Login {
    pb::agent_command::Login {
        agent_id: agent_id.into(),
        name: format!("Agent {agent_id}"),
        capacity,
        ..Default::default()
    }
}

/// A contact about "fiber" from `from` on `channel`, linking `links` (the
/// identities a gateway verified belong to the same person).
pub fn linked_contact(
    channel: pb::Channel,
    from: pb::Identity,
    links: Vec<pb::Identity>,
    text: &str,
) -> pb::SubmitContactRequest {
    pb::SubmitContactRequest {
        channel: channel as i32,
        identity: Some(from),
        topic: "fiber".into(),
        text: text.into(),
        link_identities: links,
        ..Default::default()
    }
}

/// One agent desktop: one `AgentDesktop.Session` stream.
pub struct Desktop {
    pub agent_id: String,
    commands: mpsc::Sender<pb::AgentCommand>,
    events: Streaming<pb::AgentEvent>,
    /// Events received while waiting for something else, oldest first.
    backlog: VecDeque<Event>,
    next_request: u64,
}

impl Desktop {
    /// Opens a session and sends `login` as its first command. A refused
    /// login is the status the stream failed with.
    pub async fn try_login(
        mut client: AgentDesktopClient<Channel>,
        login: pb::agent_command::Login,
    ) -> Result<Desktop, Status> {
        let agent_id = login.agent_id.clone();
        let (commands, rx) = mpsc::channel(64);
        // The server reads the login before it answers, so it must be
        // queued before the call is awaited.
        commands
            .send(pb::AgentCommand {
                request_id: 1,
                command: Some(Command::Login(login)),
            })
            .await
            .expect("command channel open");
        let events = within(
            "the session to open",
            client.session(ReceiverStream::new(rx)),
        )
        .await?
        .into_inner();
        let mut desktop = Desktop {
            agent_id,
            commands,
            events,
            backlog: VecDeque::new(),
            next_request: 2,
        };
        let r = desktop.try_result(1).await?;
        if r.code != 0 {
            return Err(Status::new(tonic::Code::from(r.code), r.message));
        }
        Ok(desktop)
    }

    /// Sends a command; returns its request id.
    pub async fn send(&mut self, command: Command) -> u64 {
        let request_id = self.next_request;
        self.next_request += 1;
        let cmd = pb::AgentCommand {
            request_id,
            command: Some(command),
        };
        within("the command to be queued", self.commands.send(cmd))
            .await
            .unwrap_or_else(|_| {
                panic!("{}: the session's request stream is closed", self.agent_id)
            });
        request_id
    }

    /// Sends a command and waits for its result.
    pub async fn command(&mut self, command: Command) -> CommandResult {
        let id = self.send(command).await;
        self.expect_result(id).await
    }

    /// Sends a command and fails the test unless it succeeds.
    pub async fn command_ok(&mut self, command: Command) {
        let what = format!("{command:?}");
        let r = self.command(command).await;
        assert_eq!(r.code, 0, "{}: {what} failed: {r:?}", self.agent_id);
    }

    /// The result of the command sent as `request_id`.
    pub async fn expect_result(&mut self, request_id: u64) -> CommandResult {
        let agent = self.agent_id.clone();
        self.try_result(request_id).await.unwrap_or_else(|s| {
            panic!("{agent}: the session failed waiting for result {request_id}: {s:?}")
        })
    }

    async fn try_result(&mut self, request_id: u64) -> Result<CommandResult, Status> {
        let what = format!("the result of request {request_id}");
        match self
            .try_next_matching(
                &what,
                |e| matches!(e, Event::Result(r) if r.request_id == request_id),
            )
            .await?
        {
            Event::Result(r) => Ok(r),
            _ => unreachable!("matched a result"),
        }
    }

    /// The next offer.
    pub async fn next_offer(&mut self) -> Offer {
        match self
            .next_event_matching("an offer", |e| matches!(e, Event::Offer(_)))
            .await
        {
            Event::Offer(o) => o,
            _ => unreachable!("matched an offer"),
        }
    }

    /// The next event (oldest first, backlog included) that `pred` accepts;
    /// the others stay in the backlog.
    pub async fn next_event_matching(
        &mut self,
        what: &str,
        pred: impl FnMut(&Event) -> bool,
    ) -> Event {
        let agent = self.agent_id.clone();
        self.try_next_matching(what, pred)
            .await
            .unwrap_or_else(|s| panic!("{agent}: the session failed waiting for {what}: {s:?}"))
    }

    /// Events received so far and not yet taken, oldest first.
    pub fn backlog(&self) -> &VecDeque<Event> {
        &self.backlog
    }

    async fn try_next_matching(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Event, Status> {
        if let Some(i) = self.backlog.iter().position(&mut pred) {
            return Ok(self.backlog.remove(i).expect("index in range"));
        }
        let give_up = tokio::time::Instant::now() + DEADLINE;
        loop {
            let next = match tokio::time::timeout_at(give_up, self.events.next()).await {
                Ok(n) => n,
                Err(_) => panic!(
                    "{}: no {what} within {DEADLINE:?}; received meanwhile: {:#?}",
                    self.agent_id, self.backlog
                ),
            };
            let event = match next {
                None => panic!(
                    "{}: the session ended while waiting for {what}; received: {:#?}",
                    self.agent_id, self.backlog
                ),
                Some(Err(s)) => return Err(s),
                Some(Ok(pb::AgentEvent { event: None })) => {
                    panic!("{}: an AgentEvent without an event", self.agent_id)
                }
                Some(Ok(pb::AgentEvent { event: Some(e) })) => e,
            };
            if pred(&event) {
                return Ok(event);
            }
            self.backlog.push_back(event);
        }
    }

    /// Closes the request stream (the agent logs out) and waits for the
    /// server to end the session.
    pub async fn close(self) {
        let Desktop {
            agent_id,
            commands,
            mut events,
            ..
        } = self;
        drop(commands);
        within("the session to end after logout", async {
            while let Some(e) = events.next().await {
                if let Err(s) = e {
                    panic!("{agent_id}: session ended with {s:?} after logout");
                }
            }
        })
        .await;
    }
}

/// Shorthands for desktop commands.
pub mod cmd {
    use super::*;
    use pb::agent_command as ac;

    pub fn accept(offer_id: &str) -> Command {
        Command::Accept(ac::Accept {
            offer_id: offer_id.into(),
        })
    }
    pub fn reject(offer_id: &str, reason: &str) -> Command {
        Command::Reject(ac::Reject {
            offer_id: offer_id.into(),
            reason: reason.into(),
        })
    }
    pub fn reply(conversation_id: &str, text: &str) -> Command {
        Command::Reply(ac::Reply {
            conversation_id: conversation_id.into(),
            text: text.into(),
        })
    }
    pub fn wrap_up(conversation_id: &str, disposition: &str) -> Command {
        Command::WrapUp(ac::WrapUp {
            conversation_id: conversation_id.into(),
            disposition: disposition.into(),
        })
    }
    pub fn resolve(conversation_id: &str) -> Command {
        Command::Resolve(ac::Resolve {
            conversation_id: conversation_id.into(),
        })
    }
    pub fn set_state(state: pb::AgentState) -> Command {
        Command::SetState(ac::SetState {
            state: state as i32,
        })
    }
}

/// Fails the test unless `r` is an error with `code` whose message starts
/// with `field` (the field at fault is named first: "field: why").
pub fn assert_status<T: Debug>(r: Result<T, Status>, code: tonic::Code, field: &str) -> Status {
    let s = match r {
        Ok(v) => panic!("expected {code:?} naming {field:?}, got a success: {v:?}"),
        Err(s) => s,
    };
    assert_eq!(s.code(), code, "wrong code for a bad {field}: {s:?}");
    assert!(
        s.message().starts_with(&format!("{field}:")),
        "message should name {field:?} first: {:?}",
        s.message()
    );
    s
}

/// Fails the test unless the command result has `code` and its message
/// starts with `field`.
pub fn assert_result(r: &CommandResult, code: tonic::Code, field: &str) {
    assert_eq!(r.code, code as i32, "wrong code for a bad {field}: {r:?}");
    assert!(
        r.message.starts_with(&format!("{field}:")),
        "message should name {field:?} first: {:?}",
        r.message
    );
}

/// A short, comparable description of a history event (every kind).
pub fn describe(e: &pb::HistoryEvent) -> String {
    match e.kind.as_ref().expect("history event has a kind") {
        Kind::CustomerMessage(m) => format!(
            "customer_message {:?} {:?}",
            pb::Channel::try_from(m.channel).unwrap(),
            m.text
        ),
        Kind::AgentMessage(m) => format!(
            "agent_message {} {:?} {:?}",
            m.agent_id,
            pb::Channel::try_from(m.channel).unwrap(),
            m.text
        ),
        Kind::Queued(q) => format!(
            "queued {} {:?}",
            q.queue_id,
            pb::Channel::try_from(q.channel).unwrap()
        ),
        Kind::Offered(o) => format!("offered {} {}", o.agent_id, o.offer_id),
        Kind::OfferRejected(r) => format!(
            "offer_rejected {} {} {:?}",
            r.agent_id, r.offer_id, r.reason
        ),
        Kind::OfferTimedOut(t) => format!("offer_timed_out {} {}", t.agent_id, t.offer_id),
        Kind::Assigned(a) => format!("assigned {}", a.agent_id),
        Kind::Transferred(t) => format!(
            "transferred {} -> {}{}",
            t.from_agent_id, t.to_queue_id, t.to_agent_id
        ),
        Kind::CallbackRequested(c) => format!(
            "callback_requested {:?}",
            pb::Channel::try_from(c.channel).unwrap()
        ),
        Kind::WrappedUp(w) => format!("wrapped_up {} {:?}", w.agent_id, w.disposition),
        Kind::Resolved(r) => format!("resolved {}", r.by),
        Kind::IdentityLinked(i) => format!(
            "identity_linked {}",
            i.identity.as_ref().map_or("", |i| i.address.as_str())
        ),
        Kind::Merged(m) => format!("merged {}", m.from_customer_id),
        Kind::Absorbed(a) => format!(
            "absorbed {}",
            a.event.as_deref().map_or("?".into(), describe)
        ),
        Kind::MergedInto(m) => format!("merged_into {}", m.into_customer_id),
        Kind::Notice(n) => format!(
            "notice {} {:?} {:?}",
            n.campaign_id,
            pb::Channel::try_from(n.channel).unwrap(),
            n.text
        ),
        Kind::BotTranscript(b) => format!("bot_transcript {} {} lines", b.bot_id, b.lines.len()),
        Kind::Abandoned(a) => format!("abandoned {:?}", pb::Channel::try_from(a.channel).unwrap()),
    }
}
