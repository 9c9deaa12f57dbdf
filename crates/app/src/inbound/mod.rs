//! The ways in from outside the process: the command line (and the HTTP
//! API). They parse and check input, call the services, and shape the
//! answers; no budget rule lives here.

#[cfg(feature = "cli")]
pub mod cli;
