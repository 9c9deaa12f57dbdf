//! Inbound adapters: how programs in other processes reach the services.
//! The services stay transport-free; each adapter here only translates a
//! wire format to service calls and back.

#[cfg(feature = "server")]
pub mod http;
