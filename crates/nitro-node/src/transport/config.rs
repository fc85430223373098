//! The settings of a transport and their limits.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{TransportError, MIN_FRAME_BYTES};

/// The longest accepted duration in the configuration.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest accepted idle timeout (keepalives go out three times as often).
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(30);

/// The default [`TransportConfig::rekey_interval`]: 2^20 records.
pub const DEFAULT_REKEY_INTERVAL: u64 = 1 << 20;

/// Settings of a [`Transport`](super::Transport).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Where to listen for peers (port 0 picks a free port; see
    /// [`Transport::local_addr`](super::Transport::local_addr)).
    pub listen: SocketAddr,
    /// The largest frame (the bytes after its 4-byte length, inside the encrypted stream)
    /// sent or accepted. A peer that announces a larger frame is disconnected. Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Unacknowledged messages kept per peer (beyond it, `send` drops the oldest: see
    /// [`Transport::send`](super::Transport::send)); also the capacity of the inbound channel.
    /// Default 4096.
    pub queue_capacity: usize,
    /// The first pause between failed dials of a peer. Default 100 ms.
    pub initial_backoff: Duration,
    /// The longest pause between dials, and between resends of one message. Default 5 s.
    pub max_backoff: Duration,
    /// The time allowed to connect and complete the handshake (Noise and both `HELLO`s).
    /// Default 5 s.
    pub handshake_timeout: Duration,
    /// A message not acknowledged this long after it was written is written again (then
    /// after twice as long, and so on up to [`max_backoff`](Self::max_backoff)). Default 1 s.
    pub ack_timeout: Duration,
    /// An authenticated connection on which nothing arrives for this long is closed. A node
    /// that has written nothing for a third of it sends a keepalive. Default 30 s.
    pub idle_timeout: Duration,
    /// Inbound connections in their handshake at once; beyond this the oldest one of the
    /// address with the most is closed. Default 128.
    pub max_pending_handshakes: usize,
    /// Inbound connections in their handshake at once from one IP address; beyond this its
    /// oldest one is closed. Default 8.
    pub max_pending_handshakes_per_ip: usize,
    /// Authenticated peers kept that were neither added ([`add_peer`](super::Transport::add_peer))
    /// nor allowed ([`allow_peer`](super::Transport::allow_peer)); a new one beyond this evicts
    /// the one idle longest. 0 refuses them all. Default 16 (a hub raises it).
    pub max_unknown_peers: usize,
    /// Records we send under one key before we rekey our sending direction (at the next end
    /// of a frame; announced in band, so the peer need not use the same value). Default 2^20.
    pub rekey_interval: u64,
}

impl TransportConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_frame_bytes: 1024 * 1024,
            queue_capacity: 4096,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            max_pending_handshakes: 128,
            max_pending_handshakes_per_ip: 8,
            max_unknown_peers: 16,
            rekey_interval: DEFAULT_REKEY_INTERVAL,
        }
    }

    pub(super) fn validate(&self) -> Result<(), TransportError> {
        let invalid = |why: String| Err(TransportError::InvalidConfig(why));
        if self.max_frame_bytes < MIN_FRAME_BYTES || self.max_frame_bytes > u32::MAX as usize {
            return invalid(format!(
                "max_frame_bytes must be between {MIN_FRAME_BYTES} and {}, got {}",
                u32::MAX,
                self.max_frame_bytes
            ));
        }
        if self.queue_capacity == 0 || self.queue_capacity > Semaphore::MAX_PERMITS {
            return invalid(format!("queue_capacity must be positive and sane, got {}", self.queue_capacity));
        }
        for (name, value) in [
            ("initial_backoff", self.initial_backoff),
            ("max_backoff", self.max_backoff),
            ("handshake_timeout", self.handshake_timeout),
            ("ack_timeout", self.ack_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() || value > MAX_DURATION {
                return invalid(format!("{name} must be positive and at most {MAX_DURATION:?}, got {value:?}"));
            }
        }
        if self.max_backoff < self.initial_backoff {
            return invalid(format!(
                "max_backoff ({:?}) is below initial_backoff ({:?})",
                self.max_backoff, self.initial_backoff
            ));
        }
        if self.idle_timeout < MIN_IDLE_TIMEOUT {
            return invalid(format!("idle_timeout must be at least {MIN_IDLE_TIMEOUT:?}, got {:?}", self.idle_timeout));
        }
        if self.max_pending_handshakes == 0 || self.max_pending_handshakes_per_ip == 0 {
            return invalid("max_pending_handshakes and max_pending_handshakes_per_ip must be positive".into());
        }
        if self.rekey_interval == 0 {
            return invalid("rekey_interval must be positive".into());
        }
        Ok(())
    }

    /// The pause before the `attempt`-th resend (0-based) of an unacknowledged message.
    pub(super) fn resend_delay(&self, attempt: u32) -> Duration {
        let cap = self.max_backoff.max(self.ack_timeout);
        self.ack_timeout.saturating_mul(1u32 << attempt.min(20)).min(cap)
    }

    /// How long a connection may stay silent on our side before we send a keepalive.
    pub(super) fn keepalive_interval(&self) -> Duration {
        self.idle_timeout / 3
    }
}

impl Default for TransportConfig {
    /// The defaults, listening on a free port of 127.0.0.1.
    fn default() -> Self {
        Self::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_delay_doubles_up_to_the_cap() {
        let config = TransportConfig::default();
        assert_eq!(config.resend_delay(0), Duration::from_secs(1));
        assert_eq!(config.resend_delay(1), Duration::from_secs(2));
        assert_eq!(config.resend_delay(2), Duration::from_secs(4));
        assert_eq!(config.resend_delay(3), Duration::from_secs(5));
        assert_eq!(config.resend_delay(u32::MAX), Duration::from_secs(5));
        assert_eq!(config.keepalive_interval(), Duration::from_secs(10));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let good = TransportConfig::default();
        assert!(good.validate().is_ok());
        assert!(TransportConfig { queue_capacity: 0, ..good.clone() }.validate().is_err());
        assert!(TransportConfig { max_frame_bytes: 10, ..good.clone() }.validate().is_err());
        assert!(TransportConfig { ack_timeout: Duration::ZERO, ..good.clone() }.validate().is_err());
        assert!(TransportConfig { idle_timeout: Duration::ZERO, ..good.clone() }.validate().is_err());
        assert!(TransportConfig { idle_timeout: Duration::from_millis(1), ..good.clone() }.validate().is_err());
        assert!(TransportConfig { max_pending_handshakes: 0, ..good.clone() }.validate().is_err());
        assert!(TransportConfig { rekey_interval: 0, ..good.clone() }.validate().is_err());
        assert!(TransportConfig { max_backoff: Duration::from_millis(1), ..good }.validate().is_err());
    }
}
