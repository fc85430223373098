//! The party's timer, and what it sends a peer whose connection was (re)established.
//!
//! Delivery belongs to the transport (ADR-0021): it keeps every message until the peer
//! acknowledges it and sends it again on every new connection. The timer therefore sends
//! nothing again; it drives what waits for *time*: the chain's clock (challenges expire),
//! transactions asked for again after they failed or stayed unconfirmed, answers to stale
//! challenges, force closes of counterparties silent too long, and the eviction of finished
//! objectives. What no transport can cover — a peer that acknowledged a message and crashed
//! before storing it, or messages a full queue gave up — is answered by [`Party::resync`]
//! when the peer connects again.

use super::{Clock, ConsensusChannel, Crank, Ctx, Effects, Envelope, Objective, ObjectiveId, Party, Payload};
use crate::{Address, LedgerMessage, Voucher};

impl Party {
    /// On a timer: the chain's clock moves on (challenges may expire); transactions that
    /// failed, or did not show up on chain for a while, are asked for again; ledgers whose
    /// counterparty stayed silent too long are reported in [`Effects::force_close_due`];
    /// finished objectives age towards eviction. Sends no message again (see
    /// [`Party::resync`]).
    pub fn tick(&mut self, clock: Clock) -> Effects {
        if clock.unix_secs > 0 {
            if self.started_at == 0 {
                self.started_at = clock.unix_secs;
            }
            self.wall_now = self.wall_now.max(clock.unix_secs);
        }
        if let Some(t) = clock.chain_time {
            self.chain.advance(t);
        }
        let mut effects = self.run_timers();
        self.tick_defences();
        self.age_finished();
        effects.extend(self.crank_all());
        effects.force_close_due = self.silent_counterparties();
        self.note(&effects);
        effects
    }

    /// Each unfinished objective's timer (transactions to ask for again).
    fn run_timers(&mut self) -> Effects {
        let mut effects = Effects::default();
        let me = self.address();
        let Self { key, ledgers, chain, objectives, changes, .. } = self;
        let mut ctx = Ctx {
            key,
            me,
            ledgers,
            chain,
            effects: &mut effects,
            opened: Vec::new(),
            closed: Vec::new(),
            force_close: Vec::new(),
            changes,
            migrated: Vec::new(),
        };
        for entry in objectives.values_mut().filter(|e| !e.done) {
            entry.objective.on_timer(&mut ctx);
        }
        effects
    }

    /// What `peer` may lack from us, for when its connection was (re)established: in every
    /// ledger with it, our unacknowledged proposals (as leader) or our countersignature on the
    /// consensus state (as follower); our signatures on every unfinished signature round it
    /// has not signed yet; and, in each virtual channel we pay it from and are not closing,
    /// our latest voucher. Changes nothing; receivers treat repeats as harmless.
    pub fn resync(&self, peer: Address) -> Effects {
        let mut effects = Effects::default();
        let me = self.address();
        let to_peer = |payload: Payload| Envelope { to: peer, payload };
        for (channel_id, ledger) in &self.ledgers {
            if self.peers.get(channel_id) != Some(&peer) {
                continue;
            }
            let messages = match ledger {
                ConsensusChannel::Leader(l) => l.resend(),
                ConsensusChannel::Follower(f) => vec![LedgerMessage::Countersignature(f.countersignature())],
            };
            effects.messages.extend(messages.into_iter().map(|m| to_peer(Payload::Ledger(m))));
        }
        for entry in self.objectives.values().filter(|e| !e.done) {
            effects.messages.extend(entry.objective.resync(me).into_iter().filter(|e| e.to == peer));
        }
        for (id, entry) in &self.objectives {
            let (ObjectiveId::VirtualFund(channel), Objective::VirtualFund(v), true) =
                (id, &entry.objective, entry.done)
            else {
                continue;
            };
            let participants = &v.channel().prefund.participants;
            let paid = self.paid(channel);
            if participants.first() == Some(&me)
                && participants.last() == Some(&peer)
                && !paid.is_zero()
                && !self.objectives.contains_key(&ObjectiveId::VirtualDefund(*channel))
            {
                effects.messages.push(to_peer(Payload::Voucher(Voucher::sign(*channel, paid, &self.key))));
            }
        }
        effects
    }
}
