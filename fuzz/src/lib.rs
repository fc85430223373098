//! Fixtures shared by the fuzz targets (and by the seed generator in `seedgen/`): fixed keys
//! and ledgers, and a reader that turns fuzz bytes into choices.

use nitro_core::{
    destination_of, Address, Balance, FixedPart, Guarantee, LedgerOutcome, Proposal, Signature, SignedState,
    SigningKey, B256, U256, U48,
};

/// The deterministic key number `n` (1: the ledger's leader, 2: its follower, 3+: strangers).
pub fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n.max(1);
    SigningKey::from_bytes(&b).expect("a small scalar is a valid key")
}

/// The leader's key.
pub fn leader_key() -> SigningKey {
    key(1)
}

/// The follower's key.
pub fn follower_key() -> SigningKey {
    key(2)
}

/// The fixed part of the fuzzed ledger.
pub fn fixed() -> FixedPart {
    FixedPart {
        participants: vec![leader_key().address(), follower_key().address()],
        channel_nonce: 7,
        app_definition: Address::repeat_byte(0xca),
        challenge_duration: U48::from(3600),
    }
}

/// The leader's destination in the ledger.
pub fn leader_dest() -> B256 {
    destination_of(leader_key().address())
}

/// The follower's destination in the ledger.
pub fn follower_dest() -> B256 {
    destination_of(follower_key().address())
}

/// Target channel number `n` of the fixture guarantees.
pub fn target(n: u8) -> B256 {
    B256::repeat_byte(n)
}

/// The ledger at turn 1: 1000 each, and three guarantees (targets 1, 2, 3).
pub fn initial_outcome() -> LedgerOutcome {
    let (l, f) = (leader_dest(), follower_dest());
    let guarantees = [
        Guarantee::new(target(1), U256::from(100), l, f).unwrap(),
        Guarantee::new(target(2), U256::from(50), f, l).unwrap(),
        Guarantee::new(target(3), U256::from(1), l, f).unwrap(),
    ];
    LedgerOutcome::with_guarantees(
        Address::ZERO,
        Balance { destination: l, amount: U256::from(1000) },
        Balance { destination: f, amount: U256::from(1000) },
        guarantees,
    )
    .unwrap()
}

/// The initial state of the ledger, signed by both participants.
pub fn initial_state() -> SignedState {
    let mut s = SignedState::new(initial_outcome().to_state(&fixed(), U48::from(1)));
    s.sign(&leader_key()).unwrap();
    s.sign(&follower_key()).unwrap();
    s
}

/// leader + follower + Σ guarantees.
pub fn sum(o: &LedgerOutcome) -> U256 {
    o.guarantees().fold(o.leader().amount + o.follower().amount, |acc, g| acc + g.amount())
}

/// What the `Credit`s among `proposals` add to leader + follower + Σ guarantees: a credit folds
/// the top-up slot (money deposited on chain for it) into a balance, the one change that makes
/// [`sum`] grow; every other change conserves it (`Reserve`/`CancelReserve` touch the slot only).
pub fn credits<'a>(proposals: impl IntoIterator<Item = &'a Proposal>) -> U256 {
    proposals.into_iter().fold(U256::ZERO, |acc, p| match p {
        Proposal::Credit { amount, .. } => acc + *amount,
        _ => acc,
    })
}

/// The credits that reached the consensus state, by the channel's own events.
pub fn agreed_credits(events: &[nitro_core::LedgerEvent]) -> U256 {
    credits(events.iter().filter_map(|e| match e {
        nitro_core::LedgerEvent::TopUpAgreed { proposal } => Some(proposal),
        _ => None,
    }))
}

/// Turns fuzz bytes into choices; once exhausted it yields zeros.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A length-prefixed (two bytes, big-endian) slice.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(u16::from_be_bytes([self.u8(), self.u8()]));
        self.bytes(n)
    }

    /// A big-endian u64 of the next 8 bytes.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let src = self.bytes(8);
        b[..src.len()].copy_from_slice(src);
        u64::from_be_bytes(b)
    }

    /// 32 bytes.
    pub fn b256(&mut self) -> B256 {
        let mut b = [0u8; 32];
        let src = self.bytes(32);
        b[..src.len()].copy_from_slice(src);
        B256::from(b)
    }

    /// An amount: mostly small, sometimes huge (to reach overflows).
    pub fn amount(&mut self) -> U256 {
        match self.u8() % 8 {
            0 => U256::ZERO,
            1 => U256::MAX - U256::from(self.u8()),
            2 => U256::from_be_bytes(self.b256().0),
            3 => U256::from(self.u64()),
            _ => U256::from(self.u8()) + U256::from(self.u8() & 3) * U256::from(256),
        }
    }

    /// A target: mostly one of a few known ones, sometimes arbitrary.
    pub fn target(&mut self) -> B256 {
        match self.u8() {
            0..=239 => target(self.u8() % 6),
            _ => self.b256(),
        }
    }

    /// A destination: mostly the ledger's parties, sometimes another.
    pub fn destination(&mut self) -> B256 {
        match self.u8() % 8 {
            0..=2 => leader_dest(),
            3..=5 => follower_dest(),
            6 => destination_of(key(3).address()),
            _ => self.b256(),
        }
    }

    /// A signature over `hash`: by `signer` most of the time, else by a stranger, or garbage.
    pub fn signature(&mut self, hash: &B256, signer: &SigningKey) -> Signature {
        match self.u8() % 16 {
            0 => key(3).sign(hash),
            1 => key(2).sign(hash),
            2 => key(1).sign(hash),
            // Altered or arbitrary bytes, through the checked constructor every signature takes
            // (a `Signature` that breaks the rules cannot be held at all).
            3 => {
                let mut bytes = signer.sign(hash).to_bytes();
                let at = usize::from(self.u8()) % 65;
                bytes[at] ^= self.u8();
                Signature::from_bytes(&bytes).unwrap_or_else(|_| signer.sign(hash))
            }
            4 => {
                let mut bytes = [0u8; 65];
                bytes[..64].copy_from_slice(
                    self.bytes(64).iter().chain([0u8; 64].iter()).take(64).copied().collect::<Vec<_>>().as_slice(),
                );
                bytes[64] = 27 + (self.u8() & 1);
                Signature::from_bytes(&bytes).unwrap_or_else(|_| key(3).sign(hash))
            }
            5 => signer.sign(&self.b256()),
            _ => signer.sign(hash),
        }
    }
}

/// Fuzzed proposals, countersignatures and rejections for the fixture ledger.
pub mod forge {
    use super::*;
    use nitro_core::{Countersignature, LedgerOutcome, Proposal, ProposalQueue, Rejection, SignedProposal, TurnNum};

    /// A proposal: an `Add` (when the fuzzed guarantee is well formed), a `Remove`, or a top-up
    /// change (`Reserve`, `Credit`, `CancelReserve`; mostly in the ledger's asset).
    pub fn proposal(r: &mut Reader) -> Proposal {
        let choice = r.u8() % 8;
        if choice < 3 {
            if let Ok(guarantee) = Guarantee::new(r.target(), r.amount(), r.destination(), r.destination()) {
                return Proposal::Add { guarantee, left_deposit: r.amount(), asset: Address::ZERO };
            }
        }
        let asset = |r: &mut Reader| {
            if r.u8() % 8 == 0 {
                nitro_core::Address::repeat_byte(9)
            } else {
                nitro_core::Address::ZERO
            }
        };
        let side = |r: &mut Reader| if r.u8() % 2 == 0 { nitro_core::Side::Leader } else { nitro_core::Side::Follower };
        match choice {
            3 => Proposal::Reserve { asset: asset(r), side: side(r), amount: r.amount() },
            4 => Proposal::Credit { asset: asset(r), side: side(r), amount: r.amount() },
            5 => Proposal::CancelReserve { asset: asset(r), side: side(r) },
            _ => Proposal::Remove { target: r.target(), left_amount: r.amount() },
        }
    }

    /// A turn near the interesting ones (`consensus`, `latest`, the next), sometimes anywhere.
    pub fn turn(r: &mut Reader, consensus: TurnNum, latest: TurnNum) -> TurnNum {
        let plus = |t: TurnNum, d: u64| t.checked_add(U48::from(d)).unwrap_or(U48::MAX);
        match r.u8() % 8 {
            0 => U48::from(r.u64() & 0xffff_ffff_ffff),
            1 => plus(latest, 2 + u64::from(r.u8() % 4)),
            2 => consensus,
            3 => latest,
            4 => consensus.saturating_sub(U48::from(1)),
            _ => plus(latest, 1),
        }
    }

    /// A channel id: the ledger's, or once in a while another.
    pub fn channel_id(r: &mut Reader, real: B256) -> B256 {
        if r.u8() == 0xff {
            r.b256()
        } else {
            real
        }
    }

    /// A signed proposal as a leader would send it, built on `latest` (the follower's view),
    /// with fuzzed turn, channel and signer.
    pub fn signed_proposal(
        r: &mut Reader,
        channel: B256,
        latest: &LedgerOutcome,
        consensus_turn: TurnNum,
        latest_turn: TurnNum,
    ) -> SignedProposal {
        // Mostly one change, sometimes a batch of a few (or none: refused as malformed).
        let count = match r.u8() % 8 {
            0 => usize::from(r.u8() % 5),
            _ => 1,
        };
        let proposals: Vec<_> = (0..count).map(|_| proposal(r)).collect();
        let turn_num = turn(r, consensus_turn, latest_turn);
        let mut o = latest.clone();
        let hash = match proposals.iter().try_for_each(|p| o.apply(p)) {
            Ok(()) => o.state_hash(channel, turn_num),
            Err(_) => r.b256(),
        };
        let previous_turn = match r.u8() % 8 {
            0 => turn(r, consensus_turn, latest_turn),
            _ => latest_turn,
        };
        SignedProposal {
            channel_id: channel_id(r, channel),
            proposals,
            previous_turn,
            turn_num,
            signature: r.signature(&hash, &leader_key()),
        }
    }

    /// The state hash at a fuzzed turn of `queue` (or a fuzzed hash).
    fn queued_hash(r: &mut Reader, queue: &ProposalQueue, turn: TurnNum) -> B256 {
        match queue.get(turn) {
            Some(q) if r.u8() % 8 != 0 => q.state_hash,
            _ => match queue.iter().nth(usize::from(r.u8()) % queue.len().max(1)) {
                Some(q) if r.u8() % 2 == 0 => q.state_hash,
                _ => r.b256(),
            },
        }
    }

    /// A countersignature as a follower would send it, at a fuzzed turn and signer.
    pub fn countersignature(
        r: &mut Reader,
        channel: B256,
        queue: &ProposalQueue,
        consensus_turn: TurnNum,
        latest_turn: TurnNum,
    ) -> Countersignature {
        let back = U48::from(r.u8() % 3);
        let turn_num = turn(r, consensus_turn, latest_turn.saturating_sub(back));
        let hash = queued_hash(r, queue, turn_num);
        Countersignature {
            channel_id: channel_id(r, channel),
            turn_num,
            signature: r.signature(&hash, &follower_key()),
        }
    }

    /// A rejection as a follower would send it, at a fuzzed turn and signer, with a reason of
    /// fuzzed length (sometimes over the limit).
    pub fn rejection(
        r: &mut Reader,
        channel: B256,
        queue: &ProposalQueue,
        consensus_turn: TurnNum,
        latest_turn: TurnNum,
    ) -> Rejection {
        let back = U48::from(r.u8() % 3);
        let turn_num = turn(r, consensus_turn, latest_turn.saturating_sub(back));
        let state_hash = queued_hash(r, queue, turn_num);
        let reason = match r.u8() {
            0xff => "é".repeat(usize::from(r.u8()) + 100),
            _ => String::from_utf8_lossy(r.chunk()).into_owned(),
        };
        let refused: Vec<u16> = match r.u8() % 4 {
            0 => vec![u16::from(r.u8() % 4)],
            1 => vec![0, u16::from(r.u8() % 4)],
            _ => Vec::new(),
        };
        let hash = Rejection::signing_hash(channel, turn_num, state_hash, &refused);
        Rejection {
            channel_id: channel_id(r, channel),
            turn_num,
            state_hash,
            refused,
            reason,
            signature: r.signature(&hash, &follower_key()),
        }
    }
}
