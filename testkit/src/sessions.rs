//! A client of the public gRPC `Sandboxes.Session`, as the session tests drive it:
//! open or attach, send input, read events checking that offsets run on without a
//! hole and that nothing is reported lost.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::sandboxes_client::SandboxesClient;
use pb::session_event::Event;
use pb::session_request::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{api_channel, keyed};

/// How long one event may take.
const WAIT: Duration = Duration::from_secs(20);

/// One client attached over the public gRPC API.
pub struct GrpcSession {
    input: mpsc::Sender<pb::SessionRequest>,
    events: tonic::Streaming<pb::SessionEvent>,
    pub session_id: String,
    /// The offset the next output byte has.
    pub offset: u64,
    /// Every output byte received, stdout and stderr in order.
    pub output: Vec<u8>,
    pub exit: Option<pb::SessionExit>,
    pub detached: Option<String>,
}

impl GrpcSession {
    /// Opens `open` and reads its `started`.
    pub async fn open(
        api_url: &str,
        key: &str,
        open: pb::SessionOpen,
    ) -> Result<Self, tonic::Status> {
        let mut sandboxes = SandboxesClient::new(api_channel(api_url).await);
        let (input, requests) = mpsc::channel(16);
        let offset = open.offset;
        input
            .send(pb::SessionRequest {
                message: Some(Message::Open(open)),
            })
            .await
            .unwrap();
        let events = sandboxes
            .session(keyed(ReceiverStream::new(requests), key))
            .await?
            .into_inner();
        let mut session = Self {
            input,
            events,
            session_id: String::new(),
            offset,
            output: Vec::new(),
            exit: None,
            detached: None,
        };
        match session.next().await? {
            Some(Event::Started(started)) => {
                assert!(started.offset >= offset, "{started:?}");
                session.session_id = started.session_id;
            }
            other => panic!("started first, not {other:?}"),
        }
        Ok(session)
    }

    /// The next event (a gap fails the test: nothing may be lost); `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Event>, tonic::Status> {
        let next = tokio::time::timeout(WAIT, self.events.message())
            .await
            .expect("an event in time")?;
        let Some(event) = next else {
            return Ok(None);
        };
        let event = event.event.expect("an event");
        match &event {
            Event::Output(output) => {
                assert_eq!(output.offset, self.offset, "offsets run on without a hole");
                self.offset += output.data.len() as u64;
                self.output.extend_from_slice(&output.data);
            }
            Event::Gap(gap) => panic!("nothing may be lost: {gap:?}"),
            Event::Exit(exit) => self.exit = Some(exit.clone()),
            Event::Detached(detached) => self.detached = Some(detached.reason.clone()),
            _ => {}
        }
        Ok(Some(event))
    }

    pub async fn send(&self, message: Message) {
        self.input
            .send(pb::SessionRequest {
                message: Some(message),
            })
            .await
            .unwrap();
    }

    /// Reads to the end of the stream.
    pub async fn drain(&mut self) -> Result<(), tonic::Status> {
        while self.next().await?.is_some() {}
        Ok(())
    }

    /// Reads until the output holds `text`; the stream ending first fails the test.
    pub async fn read_until(&mut self, text: &str) {
        self.try_read_until(text)
            .await
            .unwrap_or_else(|status| panic!("the stream ended before {text:?}: {status:?}"));
    }

    /// Reads until the output holds `text`; `Err` when the stream broke or ended first.
    pub async fn try_read_until(&mut self, text: &str) -> Result<(), tonic::Status> {
        while !String::from_utf8_lossy(&self.output).contains(text) {
            if self.next().await?.is_none() {
                return Err(tonic::Status::unavailable("the stream ended"));
            }
        }
        Ok(())
    }
}
