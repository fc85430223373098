//! Peer transport (see the helper task).
