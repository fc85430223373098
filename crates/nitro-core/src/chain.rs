//! What the core asks of the chain and hears from it, as plain data (sans-IO): the
//! transactions objectives want submitted and the adjudicator events they react to.
//! The `nitro-chain` crate carries these out against a real `NitroAdjudicator`.
