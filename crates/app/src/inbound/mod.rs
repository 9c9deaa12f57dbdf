//! Inbound adapters: how programs in other processes reach the services,
//! over HTTP or the command line. They parse and check input, call the
//! services and shape the answers; no budget rule lives here.

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "server")]
pub mod cycles;
#[cfg(feature = "server")]
pub mod http;
