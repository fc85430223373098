//! Runs Nitro ledger-channel parties (the sans-IO [`nitro_core::party::Party`]) against a
//! real chain: their transactions go to the `NitroAdjudicator` through
//! [`nitro_chain::EthChainService`], the adjudicator's confirmed events come back through an
//! [`nitro_chain::EventWatcher`], and their messages are delivered between them.
//!
//! - [`node`]: `nitro node`, one party as a process — the [`engine::Engine`] (the party and
//!   its SQLite [`store::Store`], every step durable before anything leaves), the peer
//!   [`transport`] (TCP, Noise with keys bound to addresses, acknowledgements,
//!   retransmission), the chain, and the JSON-RPC [`api`].
//! - [`LocalNetwork`]: several parties in one process, on one chain (the demo and the
//!   integration tests), each an [`engine::Engine`] over its own store; each message is
//!   delivered in the order sent, and a lost one breaks its connection, after which both ends
//!   resync.
//! - [`sim`]: the seeded network simulation, the same engines over a faulty simulated network
//!   and `nitro-testkit`'s in-memory adjudicator.
//!
//! One driver everywhere (ADR-0021): the node, the demo, the anvil tests and the simulator
//! all change a party only through [`engine::Engine::step`]. Delivery belongs to the
//! transport; the party's timer sends nothing again, and a peer that reconnects is resynced
//! ([`engine::Input::PeerConnected`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod engine;
pub mod health;
mod local;
pub mod metrics;
pub mod node;
pub mod sim;
mod startup;
pub mod store;
pub mod transport;

pub use local::{
    store_path, LocalChainSettings, LocalNetwork, MessageFilter, NetworkError, Observer, Participant, Stats, Stores,
};
