//! Writes `fuzz/corpus/<target>/` from real states and messages: the shared vectors file
//! (`../shared/vectors/nitro-vectors.json`, or `$NITRO_VECTORS`) and a real leader/follower
//! exchange. Run from `fuzz/`: `cargo run --manifest-path seedgen/Cargo.toml`.
//!
//! The operation seeds follow the byte layout the targets read (see `fuzz_targets/*.rs`).

use std::path::{Path, PathBuf};

use nitro_core::{
    chain::ChainEvent,
    party::{ObjectiveId, Payload},
    Address, FollowerChannel, LeaderChannel, LedgerMessage, Proposal, Voucher, U256,
};
use serde_json::{json, Value};

#[path = "../../src/lib.rs"]
#[allow(dead_code)]
mod fixtures;
use fixtures::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Every JSON object nested in `v` (the vectors' inputs: states, fixed parts, outcomes, …).
fn objects(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            out.push(v.clone());
            m.values().for_each(|x| objects(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| objects(x, out)),
        _ => {}
    }
}

/// A two-byte length followed by the bytes (the targets' `Reader::chunk`).
fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

fn main() {
    let out = PathBuf::from("corpus");
    let vectors = std::env::var_os("NITRO_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../../shared/vectors/nitro-vectors.json"));

    // A real exchange: proposals, countersignatures, a rejection, and their events.
    let initial = initial_state();
    let mut leader = LeaderChannel::new(leader_key(), &initial).unwrap();
    let mut follower = FollowerChannel::new(follower_key(), &initial).unwrap();
    let (l, f) = (leader_dest(), follower_dest());
    let mut messages: Vec<LedgerMessage> = Vec::new();
    let mut events = Vec::new();
    let mut propose = |leader: &mut LeaderChannel, p: Proposal| {
        let step = leader.propose(p).unwrap();
        events.extend(step.events);
        step.messages
    };
    let add = nitro_core::Guarantee::new(target(4), U256::from(30), l, f).unwrap();
    let mut sent =
        propose(&mut leader, Proposal::Add { guarantee: add, left_deposit: U256::from(10), asset: Address::ZERO });
    sent.extend(propose(&mut leader, Proposal::Remove { target: target(1), left_amount: U256::from(60) }));
    for m in &sent {
        let _ = follower.receive(m).unwrap();
    }
    let c = follower.countersign_all().unwrap();
    messages.extend(sent);
    messages.extend(c.messages.clone());
    let _ = leader.receive(&c.messages[0]).unwrap();
    let sent = propose(&mut leader, Proposal::Remove { target: target(2), left_amount: U256::from(50) });
    let _ = follower.receive(&sent[0]).unwrap();
    let j = follower.reject_next("no").unwrap();
    messages.extend(sent);
    messages.extend(j.messages.clone());
    events.extend(j.events);

    // json_decoding: vector objects and our own encodings.
    let dir = out.join("json_decoding");
    let text = std::fs::read_to_string(&vectors).expect("the vectors file (set NITRO_VECTORS)");
    let mut found = Vec::new();
    objects(&serde_json::from_str::<Value>(&text).unwrap()["vectors"], &mut found);
    let mut n = 0;
    for v in found.iter().filter(|v| v.get("participants").is_some() || v.get("outcome").is_some()).take(24) {
        write(&dir, &format!("vector-{n:02}.json"), v.to_string().as_bytes());
        n += 1;
    }
    let mut ours: Vec<Value> = vec![
        serde_json::to_value(&initial).unwrap(),
        serde_json::to_value(initial.state()).unwrap(),
        serde_json::to_value(fixed()).unwrap(),
    ];
    ours.extend(messages.iter().map(|m| serde_json::to_value(m).unwrap()));
    ours.extend(messages.iter().filter_map(|m| match m {
        LedgerMessage::Proposal(p) => Some(serde_json::to_value(p).unwrap()),
        _ => None,
    }));
    ours.extend(events.iter().map(|e| serde_json::to_value(e).unwrap()));
    let objective = ObjectiveId::DirectFund(initial.channel_id());
    let payloads = vec![
        Payload::State { objective, state: initial.clone() },
        Payload::Ledger(messages[0].clone()),
        Payload::Voucher(Voucher::sign(target(9), U256::from(5), &key(1))),
    ];
    ours.extend(payloads.iter().map(|p| serde_json::to_value(p).unwrap()));
    let chain_events = vec![
        ChainEvent::Deposited {
            channel_id: initial.channel_id(),
            block_number: 3,
            asset: Address::ZERO,
            now_held: U256::from(2151),
        },
        ChainEvent::Concluded { channel_id: initial.channel_id(), block_number: 4, finalizes_at: 99 },
        ChainEvent::AllocationUpdated {
            channel_id: initial.channel_id(),
            block_number: 4,
            asset_index: U256::ZERO,
            initial_holdings: U256::from(2151),
            final_holdings: U256::ZERO,
        },
    ];
    ours.extend(chain_events.iter().map(|e| serde_json::to_value(e).unwrap()));
    for (i, v) in ours.iter().enumerate() {
        write(&dir, &format!("ours-{i:02}.json"), v.to_string().as_bytes());
    }

    // transport_frame: 4 bytes that cut the stream into records, then frames in the binary
    // layout of docs/wire-format.md §4 (written out here, independently of the transport).
    let dir = out.join("transport_frame");
    let frame = |kind: u8, fields: &[u8]| [&((1 + fields.len()) as u32).to_be_bytes()[..], &[kind], fields].concat();
    let msg = |seq: u64, id: u64, body: &Value| {
        frame(2, &[&seq.to_be_bytes()[..], &id.to_be_bytes(), body.to_string().as_bytes()].concat())
    };
    let signature = leader_key().sign(&target(7)).to_bytes();
    let hello = frame(1, &[leader_key().address().as_slice(), &signature, &7u64.to_be_bytes()].concat());
    let body = |p: &Payload| serde_json::to_value(p).unwrap();
    let (ack, ping, rekey) = (frame(3, &1u64.to_be_bytes()), frame(4, &[]), frame(5, &[]));
    let whole = [255u8; 4].to_vec();
    let streams = [
        [&whole[..], &hello].concat(),
        [&whole[..], &msg(1, 1, &body(&payloads[1]))].concat(),
        [&whole[..], &msg(2, 2, &body(&payloads[0]))].concat(),
        [&whole[..], &ack].concat(),
        [&whole[..], &ping].concat(),
        [&whole[..], &msg(3, 9, &json!({"n": 9})), &rekey].concat(),
        // Small records: frames spanning several of them.
        [&[0u8, 1, 2, 3][..], &hello, &msg(1, 1, &body(&payloads[1])), &ack, &ping].concat(),
    ];
    for (i, bytes) in streams.iter().enumerate() {
        write(&dir, &format!("stream-{i}.bin"), bytes);
    }

    // follower_receive: valid proposals then countersigning / rejecting / a JSON message.
    // Op byte % 10: 0-3 forged proposal, 4 JSON, 5 countersign all, 6 through, 7 next, 8 reject, 9 decide.
    // A forged proposal: kind (even: Add), target (<240, n: known target n), amount (4, lo, hi),
    // two destinations (0: leader, 5: follower), deposit (4, lo, hi), turn (≥5: next),
    // channel (≠ff: the ledger's), signer (≥6: the leader).
    let add = |t: u8, amount: u8, deposit: u8| vec![0, 0, 0, t, 4, amount, 0, 0, 5, 4, deposit, 0, 7, 0, 7];
    let remove = |t: u8, left: u8| vec![0, 1, 0, t, 4, left, 0, 7, 0, 7];
    let dir = out.join("follower_receive");
    let mut seeds: Vec<Vec<u8>> = vec![
        [add(4, 30, 10), vec![5]].concat(),
        [remove(1, 60), vec![5], remove(2, 0), vec![8, 0, 2, b'n', b'o']].concat(),
        [add(4, 30, 10), add(5, 9, 9), vec![9, 0, 2, 0, 2], vec![7, 1]].concat(),
        [add(4, 30, 10), remove(4, 3), vec![6, 7], vec![5]].concat(),
    ];
    for m in &messages {
        if matches!(m, LedgerMessage::Proposal(_)) {
            seeds.push([vec![4], chunk(serde_json::to_string(m).unwrap().as_bytes()), vec![5]].concat());
        }
    }
    for (i, s) in seeds.iter().enumerate() {
        write(&dir, &format!("ops-{i}"), s);
    }

    // leader_receive: op byte % 10: 0-1 propose, 2-3 forged countersignature, 4 forged
    // rejection, 5 JSON, 6 to the follower, 7 follower decides, 8-9 to the leader.
    let dir = out.join("leader_receive");
    let propose_add = |t: u8, amount: u8, deposit: u8| vec![0, 0, 0, t, 4, amount, 0, 0, 5, 4, deposit, 0];
    let seeds: Vec<Vec<u8>> = vec![
        [propose_add(4, 30, 10), vec![6, 1, 0, 7, 0, 8, 0, 1]].concat(),
        [propose_add(4, 30, 10), vec![2, 3, 0, 7, 0, 7]].concat(),
        [propose_add(4, 30, 10), propose_add(5, 3, 1), vec![6, 0, 0, 6, 0, 0, 7, 1, 8, 0, 1, 6, 0, 0, 7, 0, 8, 0, 1]]
            .concat(),
        [propose_add(4, 30, 10), vec![4, 3, 0, 0, 0, 2, b'n', b'o', 0, 7]].concat(),
        [vec![5], chunk(serde_json::to_string(&messages[2]).unwrap().as_bytes())].concat(),
    ];
    for (i, s) in seeds.iter().enumerate() {
        write(&dir, &format!("ops-{i}"), s);
    }

    // party_messages: op byte % 12: 0-2 a recorded message (index u16, mutate?, sender?),
    // 3 JSON payload, 4-6 a pending message, 7 chain event, 8 virtual fund, 9 pay/defund,
    // 10 defund/resend, 11 run until quiet.
    let dir = out.join("party_messages");
    let mut in_order = Vec::new();
    for i in 0..40u16 {
        let [hi, lo] = i.to_be_bytes();
        in_order.extend([0, hi, lo, 1, 1]);
    }
    let seeds: Vec<Vec<u8>> = vec![
        in_order,
        vec![8, 0, 100, 4, 20, 3, 11, 9, 0, 0, 7, 0, 11, 9, 0, 0, 1, 11],
        vec![8, 3, 50, 3, 9, 1, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 7, 0, 4, 0, 4, 0],
        [vec![3], chunk(serde_json::to_string(&payloads[0]).unwrap().as_bytes()), vec![0, 1]].concat(),
        vec![0, 0, 3, 0, 0x41, 0x02, 0x33, 0, 0, 5, 0, 9, 0x31, 1, 11],
        vec![10, 1, 0, 0, 11, 10, 1, 1, 1, 11],
    ];
    for (i, s) in seeds.iter().enumerate() {
        write(&dir, &format!("ops-{i}"), s);
    }
    println!("seed corpora written under {}", out.display());
}
