//! ADR-0001: the secp256k1 backends we could sign and recover with, measured side by side.
//!
//! `ours` is what the crate uses (libsecp256k1 through `secp256k1` 0.31, one context blinded
//! once per process); `secp256k1_033` re-blinds its global context on every signature;
//! `k256` is the pure-Rust RustCrypto implementation.

use alloy_primitives::{keccak256, Address, B256};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use nitro_core::{ethereum_message_hash, recover_signer, SigningKey};

fn backends(c: &mut Criterion) {
    let secret = [0x42u8; 32];
    let hash = keccak256(b"a ledger state");
    let prefixed = ethereum_message_hash(&hash);

    let ours = SigningKey::from_bytes(&secret).unwrap();
    let sig = ours.sign(&hash);
    c.bench_function("ours/sign", |b| b.iter(|| ours.sign(black_box(&hash))));
    c.bench_function("ours/recover_address", |b| b.iter(|| recover_signer(black_box(&hash), &sig).unwrap()));

    {
        use secp256k1_033::{ecdsa::RecoverableSignature, Message, SecretKey};
        let sk = SecretKey::from_secret_bytes(secret).unwrap();
        let msg = Message::from_digest(prefixed.0);
        let rsig = RecoverableSignature::sign_ecdsa_recoverable(msg, &sk);
        c.bench_function("secp256k1_0.33/sign", |b| {
            b.iter(|| RecoverableSignature::sign_ecdsa_recoverable(black_box(msg), &sk))
        });
        c.bench_function("secp256k1_0.33/recover_address", |b| {
            b.iter(|| {
                let pk = rsig.recover_ecdsa(black_box(msg)).unwrap();
                Address::from_slice(&keccak256(&pk.serialize_uncompressed()[1..])[12..])
            })
        });
    }

    {
        use k256::ecdsa::{RecoveryId, Signature, SigningKey as K256Key, VerifyingKey};
        let sk = K256Key::from_slice(&secret).unwrap();
        let (ksig, id): (Signature, RecoveryId) = sk.sign_prehash_recoverable(prefixed.as_slice());
        c.bench_function("k256_0.14/sign", |b| b.iter(|| sk.sign_prehash_recoverable(black_box(prefixed.as_slice()))));
        c.bench_function("k256_0.14/recover_address", |b| {
            b.iter(|| {
                let vk = VerifyingKey::recover_from_prehash(black_box(prefixed.as_slice()), &ksig, id).unwrap();
                let point = vk.to_sec1_point(false);
                Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..])
            })
        });
    }

    let state_bytes = vec![0xabu8; 864];
    c.bench_function("keccak256/864B (ledger state, G=0)", |b| b.iter(|| keccak256(black_box(&state_bytes))));
    let big = vec![0xabu8; 864 + 256 * 1000];
    c.bench_function("keccak256/256864B (G=1000)", |b| b.iter(|| keccak256(black_box(&big))));
    let _ = B256::ZERO;
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = backends
}
criterion_main!(benches);
