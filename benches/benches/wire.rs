//! Micro-benchmark of the gRPC wire format: encoding and decoding the envelopes of the fast
//! path (PreAccept, PreAcceptOk, Commit) with no deps and with 64 deps.
//!
//! `cargo bench -p synevi_benches --bench wire`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use synevi_network::wire::{decode_envelope, encode_envelope};
use synevi_types::{
    Bytes, Commit, Deps, Envelope, Keys, Message, PreAccept, PreAcceptOk, Timestamp, TxBody, T, T0,
};

fn body() -> TxBody {
    TxBody {
        id: 42,
        keys: Keys::single("c17"),
        payload: Bytes::from_static(b"This is a transaction"),
    }
}

fn deps(count: u64) -> Deps {
    Deps::from_unsorted(
        (0..count)
            .map(|i| {
                T0(Timestamp::new(
                    1_700_000_000_000 + i,
                    (i % 3) as u32,
                    (i % 5) as u16 + 1,
                ))
            })
            .collect(),
    )
}

fn envelopes() -> Vec<(String, Envelope)> {
    let t0 = T0(Timestamp::new(1_700_000_000_100, 0, 1));
    let envelope = |message| Envelope {
        from: 1,
        to: 2,
        message,
        clock: Timestamp::ZERO,
    };
    let mut all = vec![(
        "PreAccept".to_string(),
        envelope(Message::PreAccept(PreAccept { t0, body: body() })),
    )];
    for count in [0, 64, 256] {
        all.push((
            format!("PreAcceptOk-{count}-deps"),
            envelope(Message::PreAcceptOk(PreAcceptOk {
                t0,
                t: T(t0.0),
                deps: deps(count),
            })),
        ));
        all.push((
            format!("Commit-{count}-deps"),
            envelope(Message::Commit(Commit {
                t0,
                t: T(t0.0),
                deps: deps(count),
                body: body(),
            })),
        ));
    }
    all
}

fn wire(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    for (name, envelope) in envelopes() {
        group.bench_with_input(
            BenchmarkId::new("encode", &name),
            &envelope,
            |b, envelope| b.iter(|| encode_envelope(std::hint::black_box(envelope))),
        );
        let bytes = encode_envelope(&envelope);
        group.bench_with_input(BenchmarkId::new("decode", &name), &bytes, |b, bytes| {
            b.iter(|| decode_envelope(std::hint::black_box(bytes)))
        });
    }
    group.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
