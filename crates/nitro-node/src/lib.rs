//! Runs Nitro ledger-channel parties (the sans-IO [`nitro_core::party::Party`]) against a
//! real chain: their transactions go to the `NitroAdjudicator` through
//! [`nitro_chain::EthChainService`], the adjudicator's confirmed events come back through an
//! [`nitro_chain::EventWatcher`], and their messages are delivered between them.
//!
//! [`LocalNetwork`] holds several parties in one process (the demo and the integration
//! tests); each message is delivered in the order sent, repeated by the parties' own resend
//! timers if lost.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod engine;
mod local;
pub mod node;
pub mod store;
pub mod transport;

pub use local::{LocalNetwork, MessageFilter, NetworkError, Participant, Stats};
