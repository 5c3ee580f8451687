//! The in-process event bus of the daz host. Plugins (each served by its own worker thread)
//! and host components (Cytube connections, storage, HTTP) publish and receive events
//! through it. The bus knows nothing about plugins: a subscriber is a name and a mailbox.
//!
//! # Layout
//!
//! - [`subject`]: NATS subject grammar, the reference matcher and the token-trie
//!   [`SubscriptionIndex`].
//! - [`envelope`]: the [`Envelope`] events travel in, [`Priority`], monotonic ids.
//! - [`mailbox`]: the bounded priority [`Mailbox`] in front of every subscriber and its
//!   overflow rules.
//! - [`bus`]: the [`Bus`] itself: registry, subscriptions, publish, direct send, request.
//! - [`request`]: pending replies ([`PendingReply`], [`Reply`]) and the request timer.
//! - [`error`]: [`SubjectError`], [`BusError`], [`RequestError`], [`MailboxConfigError`].
//! - `backoff` (private): the spin-then-yield wait used before parking a thread.
//!
//! # Guarantees
//!
//! - Delivery: `publish` queues ONE shared `Arc<Envelope>` in the mailbox of every
//!   subscriber with a matching pattern, once per subscriber. Publishing never blocks on a
//!   slow subscriber. Consumers get events highest priority first, FIFO within a priority.
//! - Overflow: a full mailbox (or per-prefix bucket) evicts the newest event of the lowest
//!   queued priority below the incoming one, otherwise drops the incoming event. Critical
//!   events are never evicted; a critical event that finds no room is rejected and
//!   `publish` returns an error. Every drop is reported to the publisher
//!   ([`PublishReport`]) and to the [`BusObserver`].
//! - Requests: exactly one responder (lowest id that is not the requester), a fresh
//!   `_INBOX.<n>` in `reply_to`, a timeout. The reply goes straight to the waiting
//!   requester and is never queued behind events in any mailbox, so a requester blocked
//!   inside its own handler cannot deadlock on its own full mailbox. Replies after the
//!   timeout are discarded and counted.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use daz_bus::{Bus, Envelope, Mailbox, MailboxConfig, Priority, Reply};
//!
//! let bus = Bus::new();
//! let mailbox = Mailbox::new("greeter", MailboxConfig::new(256));
//! let id = bus.register("greeter", mailbox.clone())?;
//! bus.subscribe(id, "cytube.in.*.chatMsg")?;
//! bus.subscribe(id, "greeter.ask")?;
//!
//! let chat = Envelope::builder("cytube.in.room1.chatMsg", &br#"{"msg":"hi"}"#[..])
//!     .room("room1")
//!     .priority(Priority::High)
//!     .build()?;
//! assert_eq!(bus.publish(chat)?.delivered, 1);
//!
//! // The subscriber's worker answers requests; the reply bypasses every mailbox.
//! let worker = {
//!     let bus = bus.clone();
//!     std::thread::spawn(move || {
//!         let mut batch = Vec::new();
//!         while mailbox.wait_nonempty(Duration::from_secs(5)) {
//!             mailbox.drain_into(&mut batch, 64);
//!             for env in batch.drain(..) {
//!                 if let Some(inbox) = &env.reply_to {
//!                     bus.reply(inbox, Reply::ok("greeter", &b"\"hello\""[..])).unwrap();
//!                     return;
//!                 }
//!             }
//!         }
//!     })
//! };
//! let ask = Envelope::builder("greeter.ask", Vec::new()).build()?;
//! let reply = bus.request(ask, None, Duration::from_secs(5))?;
//! assert_eq!(&*reply.payload, b"\"hello\"");
//! worker.join().unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backoff;
pub mod bus;
pub mod envelope;
pub mod error;
pub mod mailbox;
pub mod request;
pub mod subject;

pub use bus::{Bus, BusObserver, BusStats, PublishReport, SubscriberId};
pub use envelope::{Envelope, EnvelopeBuilder, ParsePriorityError, Priority};
pub use error::{BusError, MailboxConfigError, RequestError, SubjectError};
pub use mailbox::{Dropped, Mailbox, MailboxConfig, PushOutcome};
pub use request::{PendingReply, Reply};
pub use subject::{SubscriptionIndex, matches, validate_pattern, validate_subject};
