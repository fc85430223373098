//! Ledgers and virtual channels on a real anvil chain with the real `NitroAdjudicator`
//! (each test starts its own anvil; `npm ci` at the repository root installs it).

mod common;

use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use nitro_chain::{dev_key, Anvil, ChainService, EthChainService};
use nitro_core::{
    chain::ChainTransaction,
    party::{Objective, ObjectiveId, PartyError, Payload},
    ChannelId, ConsensusChannel, LedgerOutcome, Proposal, SignedState, U48,
};
use nitro_node::{engine::Request, LocalNetwork, NetworkError};

const CHALLENGE_DURATION: u64 = 600;
const TIMEOUT: Duration = Duration::from_secs(60);

fn milli(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000_000_000_000u64)
}

struct Setup {
    anvil: Anvil,
    net: LocalNetwork,
}

impl Setup {
    /// Alice (0), the hub (1) and Bob (2) on a fresh chain.
    async fn start() -> Self {
        let common::local_chain::LocalChain { anvil, net, .. } =
            common::local_chain::LocalChain::start(CHALLENGE_DURATION).await;
        Self { anvil, net }
    }

    fn addrs(&self) -> (Address, Address, Address) {
        (self.net.address(0), self.net.address(1), self.net.address(2))
    }

    fn chain(&self, i: usize) -> &EthChainService {
        &self.net.participants[i].chain
    }

    /// L(hub, alice) and L(hub, bob), led by the hub, `amount` from each side.
    async fn open_ledgers(&mut self, amount: U256) -> (ChannelId, ChannelId) {
        let (alice, hub, bob) = self.addrs();
        let a = self
            .net
            .start(
                1,
                Request::LedgerOpen {
                    participants: [hub, alice],
                    asset: Address::ZERO,
                    amounts: [amount, amount],
                    nonce: 1,
                    more_assets: Vec::new(),
                },
            )
            .unwrap();
        let b = self
            .net
            .start(
                1,
                Request::LedgerOpen {
                    participants: [hub, bob],
                    asset: Address::ZERO,
                    amounts: [amount, amount],
                    nonce: 2,
                    more_assets: Vec::new(),
                },
            )
            .unwrap();
        self.net.run_objectives(&[a, b], TIMEOUT).await.unwrap();
        (a.channel_id(), b.channel_id())
    }

    async fn fund_virtual(&mut self, a: U256, b: U256, count: u64) -> Vec<ObjectiveId> {
        let (alice, hub, bob) = self.addrs();
        let ids: Vec<_> = (0..count)
            .map(|k| {
                self.net
                    .start(
                        0,
                        Request::VirtualFund {
                            participants: vec![alice, hub, bob],
                            asset: Address::ZERO,
                            amounts: [a, b],
                            nonce: k,
                        },
                    )
                    .unwrap()
            })
            .collect();
        self.net.run_objectives(&ids, TIMEOUT).await.unwrap();
        ids
    }

    fn outcome(&self, party: usize, ledger: &ChannelId) -> LedgerOutcome {
        self.net.participants[party].party().ledger(ledger).unwrap().consensus_outcome().clone()
    }

    async fn balance(&self, i: usize) -> U256 {
        self.chain(i).client().balance(self.net.address(i)).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_is_opened_used_and_closed_paying_each_party_its_final_balance() {
    let mut s = Setup::start().await;
    let (la, lb) = s.open_ledgers(milli(1000)).await;
    for l in [la, lb] {
        assert_eq!(s.chain(1).holdings(Address::ZERO, l).await.unwrap(), milli(2000), "both deposits are held");
    }
    assert_eq!(s.net.participants[0].deposited, milli(1000));
    assert_eq!(s.net.participants[1].deposited, milli(2000));

    // Proposals run through the ledger: three virtual channels, payments, closing them.
    let ids = s.fund_virtual(milli(100), milli(10), 3).await;
    for id in &ids {
        s.net.request(0, Request::Pay { channel_id: id.channel_id(), amount: milli(40) }).unwrap();
    }
    s.net
        .run_until(TIMEOUT, |ps| ids.iter().all(|id| ps[2].party().paid(&id.channel_id()) == milli(40)))
        .await
        .unwrap();
    let defunds: Vec<_> =
        ids.iter().map(|id| s.net.start(2, Request::VirtualDefund { channel_id: id.channel_id() }).unwrap()).collect();
    s.net.run_objectives(&defunds, TIMEOUT).await.unwrap();
    let final_a = s.outcome(0, &la);
    assert_eq!(final_a.guarantees().len(), 0);
    assert_eq!(final_a.follower().amount, milli(1000 - 120), "alice paid 40 three times");
    assert_eq!(final_a.leader().amount, milli(1000 + 120));

    // Close L(hub, alice): alice (who sends no transaction) receives exactly her balance; the
    // hub its balance minus the fee of the conclusion it submits.
    let before = (s.balance(0).await, s.balance(1).await, s.net.participants[1].fees_paid);
    let close = s.net.start(1, Request::LedgerClose { channel_id: la }).unwrap();
    s.net.run_objectives(&[close], TIMEOUT).await.unwrap();
    assert_eq!(s.balance(0).await - before.0, final_a.follower().amount);
    let hub_fee = s.net.participants[1].fees_paid - before.2;
    assert_eq!(s.balance(1).await + hub_fee - before.1, final_a.leader().amount);
    assert_eq!(s.chain(1).holdings(Address::ZERO, la).await.unwrap(), U256::ZERO);
    assert!(s.net.participants[0].party().ledger(&la).is_none() && s.net.participants[1].party().ledger(&la).is_none());
    assert!(s.net.participants[1].party().ledger(&lb).is_some(), "the other ledger is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consensus_state_with_guarantees_is_supported_on_chain_and_a_half_signed_one_is_not() {
    let mut s = Setup::start().await;
    let (la, _) = s.open_ledgers(milli(100)).await;
    let ids = s.fund_virtual(milli(10), milli(5), 2).await;
    let consensus = s.net.participants[1].party().ledger(&la).unwrap().consensus_state();
    let outcome = LedgerOutcome::from_exit(&consensus.state().outcome).unwrap();
    assert_eq!(outcome.guarantees().len(), 2);
    assert!(ids.iter().all(|id| outcome.guarantee(&id.channel_id()).is_some()));

    let (supported, reason) = s.chain(1).state_is_supported(&consensus).await.unwrap();
    assert!(supported, "{reason}");
    s.chain(1).submit(&ChainTransaction::checkpoint(consensus.clone()).unwrap()).await.unwrap();
    let status = s.chain(1).status_of(la).await.unwrap();
    assert_eq!(status.turn_num_record, consensus.state().turn_num);

    let mut half = SignedState::new(consensus.state().clone());
    half.sign(&dev_key(2).unwrap()).unwrap(); // the hub only
    assert!(ChainTransaction::checkpoint(half.clone()).is_err(), "we refuse before sending");
    let (supported, _) = s.chain(1).state_is_supported(&half).await.unwrap();
    assert!(!supported, "and so does the contract");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_challenge_is_seen_on_chain_and_defeated_by_a_checkpoint() {
    let mut s = Setup::start().await;
    let (la, _) = s.open_ledgers(milli(100)).await;
    s.fund_virtual(milli(10), milli(5), 3).await;
    let latest = s.net.participants[1].party().ledger(&la).unwrap().consensus_turn();
    assert!(latest > U48::from(1));

    // Alice challenges with the old postfund state (turn 1), in which she holds more.
    let Some(Objective::DirectFund(fund)) = s.net.participants[0].party().objective(&ObjectiveId::DirectFund(la))
    else {
        panic!("alice funded the ledger")
    };
    let stale = fund.postfund().clone();
    let challenge = ChainTransaction::challenge(stale, &dev_key(1).unwrap()).unwrap();
    s.chain(0).submit(&challenge).await.unwrap();
    assert!(s.chain(0).status_of(la).await.unwrap().finalizes_at > 0, "the challenge is registered");

    // The parties see it through the watcher and answer with the latest consensus state.
    let start = Instant::now();
    let status = loop {
        // Nothing else is going on: run the network a little, then look at the chain.
        let _ = s.net.run_until(Duration::from_millis(100), |_| false).await;
        let status = s.chain(1).status_of(la).await.unwrap();
        if status.finalizes_at == 0 || start.elapsed() > TIMEOUT {
            break status;
        }
    };
    assert_eq!(status.turn_num_record, latest, "the newest consensus state is on chain");
    assert_eq!(status.finalizes_at, 0, "the challenge is cleared");
    assert!(s.net.stats.challenges_answered >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_typed_errors() {
    let mut s = Setup::start().await;
    let (la, _) = s.open_ledgers(milli(100)).await;
    let ids = s.fund_virtual(milli(10), milli(0), 1).await;
    let refusal = |r: Result<Option<ObjectiveId>, NetworkError>| match r {
        Err(NetworkError::Party { error, .. }) => *error,
        other => panic!("not a refusal: {other:?}"),
    };
    assert_eq!(refusal(s.net.request(1, Request::LedgerClose { channel_id: la })), PartyError::GuaranteesRemain(1));
    assert!(matches!(
        refusal(s.net.request(1, Request::LedgerClose { channel_id: ChannelId::ZERO })),
        PartyError::UnknownLedger(_)
    ));
    let (alice, hub_addr, _) = s.addrs();
    let stranger = dev_key(7).unwrap().address();
    let refused = s.net.request(
        0,
        Request::VirtualFund {
            participants: vec![alice, stranger, hub_addr],
            asset: Address::ZERO,
            amounts: [milli(1), milli(1)],
            nonce: 9,
        },
    );
    assert_eq!(refusal(refused), PartyError::NoLedgerWith(stranger));
    let overpay = s.net.request(0, Request::Pay { channel_id: ids[0].channel_id(), amount: milli(11) });
    assert!(matches!(refusal(overpay), PartyError::Overpaid { .. }));
    let not_payer = s.net.request(2, Request::Pay { channel_id: ids[0].channel_id(), amount: milli(1) });
    assert!(matches!(refusal(not_payer), PartyError::BadRequest(_)));
    let ledger_again = s.net.request(
        1,
        Request::LedgerOpen {
            participants: [hub_addr, alice],
            asset: Address::ZERO,
            amounts: [milli(1), milli(1)],
            nonce: 5,
            more_assets: Vec::new(),
        },
    );
    assert!(matches!(refusal(ledger_again), PartyError::LedgerExists(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_funding_locks_guarantees_in_both_ledgers_and_defunding_moves_exactly_the_final_split() {
    let mut s = Setup::start().await;
    let (la, lb) = s.open_ledgers(milli(1000)).await;
    let total = |s: &Setup, party: usize| -> U256 {
        let mut sum = U256::ZERO;
        for l in [la, lb] {
            if let Some(ledger) = s.net.participants[party].party().ledger(&l) {
                let o = ledger.consensus_outcome();
                let me = nitro_core::destination_of(s.net.address(party));
                if o.leader().destination == me {
                    sum += o.leader().amount;
                }
                if o.follower().destination == me {
                    sum += o.follower().amount;
                }
            }
        }
        sum
    };
    let ids = s.fund_virtual(milli(70), milli(30), 1).await;
    let v = ids[0].channel_id();
    let (alice, hub, bob) = s.addrs();
    for (party, ledger, left, right) in [(0, la, alice, hub), (1, la, alice, hub), (1, lb, hub, bob), (2, lb, hub, bob)]
    {
        let g = *s.outcome(party, &ledger).guarantee(&v).expect("guarantee in the consensus state");
        assert_eq!(g.amount(), milli(100));
        assert_eq!(g.left(), nitro_core::destination_of(left));
        assert_eq!(g.right(), nitro_core::destination_of(right));
        assert!(s.net.participants[party].party().ledger(&ledger).unwrap().is_locked(&v));
    }
    assert_eq!(s.outcome(1, &la).follower().amount, milli(930), "alice put in a = 70");
    assert_eq!(s.outcome(1, &la).leader().amount, milli(970), "the hub put in b = 30 on alice's side");
    assert_eq!(s.outcome(1, &lb).leader().amount, milli(930), "and a = 70 on bob's side");
    assert_eq!(s.outcome(1, &lb).follower().amount, milli(970), "bob put in b = 30");

    s.net.request(0, Request::Pay { channel_id: v, amount: milli(25) }).unwrap();
    let defund = s.net.start(0, Request::VirtualDefund { channel_id: v }).unwrap();
    s.net.run_objectives(&[defund], TIMEOUT).await.unwrap();
    assert_eq!(total(&s, 0), milli(1000 - 25));
    assert_eq!(total(&s, 2), milli(1000 + 25));
    assert_eq!(total(&s, 1), milli(2000), "the hub neither gains nor loses");
    assert_eq!(total(&s, 0) + total(&s, 1) + total(&s, 2), milli(4000), "money is conserved across the three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_hub_vanishes_the_guarantees_pay_out_on_chain_exactly_as_promised() {
    let mut s = Setup::start().await;
    let (la, lb) = s.open_ledgers(milli(1000)).await;
    let ids = s.fund_virtual(milli(100), milli(0), 1).await;
    let v = ids[0].channel_id();
    s.net.request(0, Request::Pay { channel_id: v, amount: milli(30) }).unwrap();
    s.net.run_until(TIMEOUT, |ps| ps[2].party().paid(&v) == milli(30)).await.unwrap();

    // Bob closes V; everyone signs V's final state, but the hub never moves the ledgers:
    // every ledger message is lost from here on.
    s.net.set_filter(Some(Box::new(|_, e| !matches!(e.payload, Payload::Ledger(_)))));
    let defund = s.net.start(2, Request::VirtualDefund { channel_id: v }).unwrap();
    s.net
        .run_until(TIMEOUT, |ps| {
            ps.iter().all(|p| match p.party().objective(&defund) {
                Some(Objective::VirtualDefund(d)) => d.final_state().is_fully_signed(),
                _ => false,
            })
        })
        .await
        .unwrap();
    let Some(Objective::VirtualDefund(d)) = s.net.participants[2].party().objective(&defund) else { panic!() };
    let v_final = d.final_state().clone();
    assert!(!s.net.participants[2].party().is_complete(&defund), "the guarantees were not released off chain");

    // Bob goes to chain: V concludes with its final state; both ledgers are challenged with
    // their latest consensus states (which hold the guarantee) and time out.
    let bob_chain = s.chain(2).clone();
    bob_chain.submit(&ChainTransaction::conclude(v_final.clone()).unwrap()).await.unwrap();
    // Each ledger is challenged by its non-hub participant (a challenger must be a participant);
    // Bob's account sends every transaction.
    let mut bob_fees = U256::ZERO;
    let ledgers: Vec<(SignedState, usize)> = [(la, 0usize), (lb, 2usize)]
        .iter()
        .map(|(l, follower)| (s.net.participants[*follower].party().ledger(l).unwrap().consensus_state(), *follower))
        .collect();
    for (l, follower) in &ledgers {
        let challenger = dev_key(follower + 1).unwrap();
        bob_chain.submit(&ChainTransaction::challenge(l.clone(), &challenger).unwrap()).await.unwrap();
    }
    s.anvil.advance_time(CHALLENGE_DURATION + 1).await.unwrap();

    let before: Vec<U256> = balances(&s).await;
    let mut expected = [U256::ZERO; 3];
    for (ledger, follower) in &ledgers {
        let id = ledger.channel_id();
        let outcome = LedgerOutcome::from_exit(&ledger.state().outcome).unwrap();
        let index = 2 + outcome.guarantees().position(|g| g.target() == v).unwrap();
        // reclaim: V's allocations 0 and 1 go to the guarantee's left and right.
        bob_fees += bob_chain
            .submit(&ChainTransaction::Reclaim {
                source_channel_id: id,
                source_state_hash: ledger.hash(),
                source_outcome: ledger.state().outcome.clone(),
                source_asset_index: 0,
                index_of_target_in_source: index,
                target_state_hash: alloy_primitives::B256::ZERO, // V was concluded
                target_outcome: v_final.state().outcome.clone(),
                target_asset_index: 0,
            })
            .await
            .unwrap()
            .fee();
        // What reclaim leaves is exactly what our Remove proposal computes.
        let mut reclaimed = outcome.clone();
        let left_amount = v_final.state().outcome.0[0].allocations[0].amount;
        reclaimed.apply(&Proposal::Remove { target: v, left_amount }).unwrap();
        bob_fees += bob_chain
            .submit(&ChainTransaction::Transfer {
                channel_id: id,
                asset_index: 0,
                outcome: reclaimed.to_exit(),
                state_hash: ledger.hash(),
                indices: vec![],
            })
            .await
            .unwrap()
            .fee();
        // The hub leads both ledgers.
        expected[1] += reclaimed.leader().amount;
        expected[*follower] += reclaimed.follower().amount;
        assert_eq!(bob_chain.holdings(Address::ZERO, id).await.unwrap(), U256::ZERO);
    }
    let after = balances(&s).await;
    assert_eq!(after[0] - before[0], expected[0]);
    assert_eq!(expected[0], milli(1000 - 30), "alice: 1000 - 100 + (100 - 30)");
    assert_eq!(after[1] - before[1], expected[1]);
    assert_eq!(expected[1], milli(2000), "the hub: what it put in, no more, no less");
    assert_eq!(after[2] + bob_fees - before[2], expected[2]);
    assert_eq!(expected[2], milli(1000 + 30), "bob: his balance plus the 30 he was paid");
}

async fn balances(s: &Setup) -> Vec<U256> {
    let mut out = Vec::new();
    for i in 0..3 {
        out.push(s.balance(i).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_virtual_channels_fund_concurrently_through_one_hub() {
    let mut s = Setup::start().await;
    let (la, lb) = s.open_ledgers(milli(100_000)).await;
    let start = Instant::now();
    let ids = s.fund_virtual(milli(100), milli(50), 100).await;
    let funded = start.elapsed();
    for (p, l) in [(0, la), (1, la), (1, lb), (2, lb)] {
        assert_eq!(s.outcome(p, &l).guarantees().len(), 100);
    }
    let start = Instant::now();
    let defunds: Vec<_> =
        ids.iter().map(|id| s.net.start(0, Request::VirtualDefund { channel_id: id.channel_id() }).unwrap()).collect();
    s.net.run_objectives(&defunds, TIMEOUT).await.unwrap();
    let defunded = start.elapsed();
    for (p, l) in [(0, la), (1, la), (1, lb), (2, lb)] {
        assert_eq!(s.outcome(p, &l).guarantees().len(), 0);
        assert!(
            !matches!(s.net.participants[p].party().ledger(&l), Some(ConsensusChannel::Follower(f)) if f.pending().len() > 0)
        );
    }
    eprintln!(
        "100 virtual channels: funded in {:.0} ms, defunded in {:.0} ms ({} messages)",
        funded.as_secs_f64() * 1e3,
        defunded.as_secs_f64() * 1e3,
        s.net.stats.messages
    );
}
