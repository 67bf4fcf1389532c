//! Micro-benchmark of the protocol alone: three or five pure `Core`s wired by hand (no
//! network, no store, no tokio), a batch of transactions submitted round-robin, messages
//! delivered until the cluster is quiet, every execution acknowledged. What this costs per
//! transaction is the floor of the protocol's CPU time per transaction in the cluster
//! workloads.
//!
//! `cargo bench -p synevi_benches --bench core`

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use synevi_core::{Config, Core, Now};
use synevi_types::{Bytes, Keys, TxBody, Ulid};

const BATCH: u64 = 256;

#[derive(Clone, Copy)]
enum KeyMode {
    Disjoint,
    Hot,
    All,
}

fn cores(nodes: u16) -> Vec<Core> {
    let mut cores: Vec<Core> = (1..=nodes)
        .map(|serial| {
            Core::new(Ulid::new(), serial, Config::default(), u64::from(serial))
                .expect("a core with the default config")
        })
        .collect();
    for core in &mut cores {
        for peer in 1..=nodes {
            if peer != core.serial() {
                core.add_member(peer, true).expect("a new member");
            }
        }
    }
    cores
}

/// Submits `BATCH` transactions round-robin and runs the cluster until it is quiet; returns
/// how many executions happened (all nodes).
fn run_batch(cores: &mut [Core], keys: KeyMode) -> usize {
    let now = Now {
        wall_ms: 1_000,
        monotonic_ms: 0,
    };
    let n = cores.len();
    for i in 0..BATCH {
        let keys = match keys {
            KeyMode::Disjoint => Keys::single(format!("k{i}").as_str()),
            KeyMode::Hot => Keys::single("hot"),
            KeyMode::All => Keys::All,
        };
        let body = TxBody {
            id: u128::from(i),
            keys,
            payload: Bytes::from_static(b"This is a transaction"),
        };
        cores[i as usize % n].submit(now, body);
    }
    let mut executed = 0;
    loop {
        let mut in_flight = Vec::new();
        for core in cores.iter_mut() {
            let ready = core.take_ready();
            in_flight.extend(ready.messages);
            for execution in ready.execute {
                executed += 1;
                core.applied(now, execution.t0, [0; 32]);
            }
        }
        if in_flight.is_empty() {
            return executed;
        }
        for envelope in in_flight {
            let to = usize::from(envelope.to - 1);
            cores[to].receive(now, envelope);
        }
    }
}

fn protocol(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    for nodes in [3u16, 5] {
        for (name, keys) in [
            ("disjoint", KeyMode::Disjoint),
            ("hot", KeyMode::Hot),
            ("all", KeyMode::All),
        ] {
            group.bench_with_input(
                BenchmarkId::new(format!("{nodes}n-{BATCH}-concurrent"), name),
                &keys,
                |b, &keys| {
                    b.iter_batched(
                        || cores(nodes),
                        |mut cores| run_batch(&mut cores, keys),
                        BatchSize::SmallInput,
                    )
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, protocol);
criterion_main!(benches);
