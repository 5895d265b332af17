//! Why the daemon could not start, or how it ended ([`super::Daemon`]).

use super::clients::ClientError;
use super::failure::Fatal;
use std::net::SocketAddr;

/// An error of [`super::Daemon::start`] or [`super::Daemon::wait`].
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The admin listener's runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// `admin.listen` cannot be bound.
    #[error("cannot listen on admin.listen = {address}: {error}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// A Kafka client could not be made or subscribed.
    #[error("cannot {doing}: {error}")]
    Kafka {
        /// What failed.
        doing: &'static str,
        /// The client's error, secrets removed.
        error: ClientError,
    },
    /// One of the daemon's threads could not start.
    #[error("cannot start the {name} thread: {error}")]
    Thread {
        /// Which thread.
        name: &'static str,
        /// Why.
        error: std::io::Error,
    },
    /// One of the daemon's threads panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// A fatal error, with its exit code (docs/reliability.md, "Exit codes").
    #[error(transparent)]
    Fatal(#[from] Fatal),
}

impl DaemonError {
    /// The fatal error, if this is one.
    pub fn fatal(&self) -> Option<&Fatal> {
        match self {
            Self::Fatal(fatal) => Some(fatal),
            _ => None,
        }
    }

    /// A thread that could not start.
    pub(super) fn thread(name: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |error| Self::Thread { name, error }
    }

    /// A Kafka client that could not be made or subscribed.
    pub(super) fn kafka(doing: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        move |error| Self::Kafka {
            doing,
            error: super::clients::without_secrets(error),
        }
    }
}
