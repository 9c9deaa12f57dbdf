//! The application layer of spendgate: services and background workers
//! wired from the ports, and the `spendgate` binary.
//!
//! It is the outermost ring (`app -> adapters -> ports -> domain`) and the
//! only crate that picks concrete adapters. The services, the worker handle
//! and the builder that embeds them arrive with their own issues; until then
//! this crate only names the layering.
