//! Every error the bus returns: subject grammar errors, bus operation errors and request
//! errors. Callers branch on these, so each cause is its own variant, and each message says
//! what failed, why, and what to do about it.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::{PublishReport, SubscriberId};

/// A subject or subscription pattern broke the grammar (see [`crate::subject`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("empty subject: a subject needs at least one token, e.g. `cytube.in.room.chatMsg`")]
    Empty,
    #[error(
        "subject `{input}` is {len} bytes long, more than the limit of {max}: use shorter tokens"
    )]
    TooLong {
        input: String,
        len: usize,
        max: usize,
    },
    #[error(
        "subject `{input}` has an empty token at position {index}: tokens are separated by single \
         dots, with no leading or trailing dot"
    )]
    EmptyToken { input: String, index: usize },
    #[error(
        "subject `{input}` contains the character {ch:?}: whitespace and control characters are \
         not allowed in subjects; replace them, e.g. with `_`"
    )]
    InvalidChar { input: String, ch: char },
    #[error(
        "subject `{input}` contains a wildcard: `*` and `>` may appear only in subscription \
         patterns, publish to a concrete subject instead"
    )]
    WildcardInSubject { input: String },
    #[error(
        "pattern `{input}` uses `>` before its last token: `>` matches all remaining tokens and \
         must end the pattern, e.g. `cytube.in.>`"
    )]
    MisplacedFullWildcard { input: String },
    #[error(
        "pattern `{input}` has the token `{token}` mixing wildcards with other characters: a \
         wildcard must be a whole token (`a.*.c`, not `a.b*.c`)"
    )]
    PartialWildcard { input: String, token: String },
}

/// A bus operation (register, subscribe, publish, send, reply) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("invalid subject: {0}")]
    InvalidSubject(#[from] SubjectError),
    #[error(
        "subscriber name `{name}` is already registered: names must be unique; unregister the old \
         subscriber first"
    )]
    NameTaken { name: String },
    #[error("invalid subscriber name `{name}`: a name must be non-empty and free of whitespace")]
    InvalidName { name: String },
    #[error(
        "subscriber {id} is not registered (it was never registered or has been unregistered): \
         register it before subscribing"
    )]
    UnknownSubscriber { id: SubscriberId },
    #[error("cannot send `{subject}` to `{name}`: no subscriber has that name")]
    UnknownRecipient { name: String, subject: String },
    #[error("cannot send `{subject}` to `{name}`: its mailbox is closed (it is shutting down)")]
    RecipientClosed { name: String, subject: String },
    #[error(
        "{} critical deliveries of `{}` were rejected because the receiving mailboxes are full \
         of critical events; the other deliveries went through. Raise the mailbox capacity or \
         find out why the receiver is not draining",
        report.rejected.len(),
        report.rejected.first().map_or("", |d| &*d.subject)
    )]
    Rejected { report: PublishReport },
    #[error(
        "no request is waiting on `{reply_to}`: it is not an inbox this bus handed out; reply to \
         the envelope's `reply_to` exactly"
    )]
    UnknownInbox { reply_to: String },
    #[error(
        "the request behind `{reply_to}` is no longer waiting (it timed out, was answered \
         already, or its responder went away); the reply was discarded"
    )]
    ReplyExpired { reply_to: String },
}

/// A request (see [`crate::Bus::request`]) did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no subscriber handles `{subject}`: nobody could answer the request")]
    NoResponder { subject: Arc<str> },
    #[error(
        "request `{subject}` got no reply within {after:?}: the responder is slow, stuck or \
         dropped the request; retry later or raise the timeout"
    )]
    Timeout { subject: Arc<str>, after: Duration },
    #[error(
        "responder `{responder}` could not take request `{subject}`: its mailbox is full; retry \
         later or send the request with a higher priority"
    )]
    MailboxFull {
        responder: Arc<str>,
        subject: Arc<str>,
    },
    #[error(
        "request `{subject}`: the only subscriber that could answer is the requester itself, which \
         would wait on itself forever; handle it locally instead"
    )]
    SelfRequest { subject: Arc<str> },
    #[error("responder `{responder}` went away (unregistered or mailbox closed) before answering")]
    ResponderGone { responder: Arc<str> },
    #[error("invalid request subject: {0}")]
    InvalidSubject(#[from] SubjectError),
    #[error(
        "the bus timer thread could not be started ({reason}), so an async request could not \
         honour its timeout; use the blocking form or free system resources"
    )]
    TimerUnavailable { reason: String },
}

/// A [`crate::MailboxConfig`] that the host should refuse when loading configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxConfigError {
    #[error(
        "mailbox prefix cap `{prefix}` is not a valid subject prefix ({source}); write it as \
         concrete tokens without wildcards, e.g. `cytube.in.room1.mediaUpdate`"
    )]
    InvalidPrefix {
        prefix: String,
        #[source]
        source: SubjectError,
    },
    #[error("mailbox prefix cap `{prefix}` is listed twice: keep one entry")]
    DuplicatePrefix { prefix: String },
}
