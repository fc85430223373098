//! `LocalNetwork::connect`: parties on stores in memory at the chain's default depth, and a
//! request a party refuses, reported with the party's name and changing nothing.

mod common;

use alloy_primitives::{B256, U256};
use common::Net;
use nitro_chain::dev_key;
use nitro_core::{party::PartyConfig, U48};
use nitro_node::{engine::Request, LocalNetwork, NetworkError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_puts_parties_in_memory_and_names_the_party_that_refuses() {
    let net = Net::start().await;
    let config = PartyConfig {
        consensus_app: net.contracts.consensus_app,
        virtual_payment_app: net.contracts.virtual_payment_app,
        challenge_duration: U48::from(3_600),
    };
    let parties = vec![("alice".to_owned(), dev_key(1).unwrap()), ("bob".to_owned(), dev_key(2).unwrap())];
    let mut local = LocalNetwork::connect(&net.anvil.endpoint(), &net.contracts, parties, config).await.unwrap();
    assert_eq!(local.address(0), dev_key(1).unwrap().address());
    assert_eq!(local.address(1), dev_key(2).unwrap().address());
    assert_eq!(local.participants.len(), 2);

    // Paying in a channel nobody opened: bob's refusal, named, and nothing started.
    let pay = Request::Pay { channel_id: B256::repeat_byte(7), amount: U256::from(1) };
    let e = local.request(1, pay.clone()).unwrap_err();
    assert!(matches!(e, NetworkError::Party { .. }), "{e:?}");
    assert!(e.to_string().starts_with("bob: "), "{e}");
    let e = local.start(0, pay).unwrap_err();
    assert!(e.to_string().starts_with("alice: "), "{e}");
    assert_eq!(local.participants[0].party().objectives().count(), 0);
    assert_eq!(local.participants[1].party().objectives().count(), 0);
}
