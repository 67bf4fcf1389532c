//! `synevi-bench`: runs synevi clusters (each workload in a fresh process of its own) and
//! reports throughput, latency, CPU time per transaction and memory, with the machine's
//! floor and the targets.
//!
//! `cargo run --release -p synevi_benches -- --help`

/// mimalloc, not the platform's allocator: under load a node allocates and frees many
/// short-lived buffers of a few kilobytes (deps lists, encoded frames), which glibc's malloc
/// serves from its slower bins; it was 18 % of all CPU with a hot key, and mimalloc made the
/// same workloads about a quarter faster (docs/benchmarks.md). An application embedding
/// synevi chooses its own allocator; `--no-default-features` measures with the platform's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of `mimalloc.h` (v2 and v3 alike), which `libmimalloc-sys` does
/// not name: the option just before `mi_option_use_numa_nodes` (16), which it does.
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets how long mimalloc keeps memory it no longer uses before it returns it to the
/// operating system (negative: never). mimalloc reads the option each time it purges, so
/// setting it after the first allocations still holds for all that follow.
#[cfg(feature = "mimalloc")]
fn set_purge_delay(ms: i64) {
    const _: () = assert!(MI_OPTION_PURGE_DELAY + 1 == libmimalloc_sys::mi_option_use_numa_nodes);
    let ms = std::os::raw::c_long::try_from(ms).unwrap_or(std::os::raw::c_long::MAX);
    // SAFETY: `mi_option_set` only stores the value in mimalloc's option table, which any
    // thread may do at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) }
}

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use synevi_benches::cluster::{CoreSite, NetworkKind, StoreKind};
use synevi_benches::floor::{self, Floor};
use synevi_benches::long_run::{self, LongSpec};
use synevi_benches::machine::{self, Machine};
use synevi_benches::plan::{self, Settings};
use synevi_benches::report::{self, Report};
use synevi_benches::targets;
use synevi_benches::workload::{self, KeyMode, WorkloadResult, WorkloadSpec};

/// Benchmarks synevi clusters over gRPC on 127.0.0.1, all nodes of a cluster in one process
/// (a fresh one for each workload): the seed's workloads, a matrix of nodes × clients ×
/// stores × keys, the machine's floor (bare gRPC round trip, synced LMDB commit) and a long
/// run that samples memory. Prints a table and PASS/MISS per target, and writes everything
/// as JSON.
#[derive(Parser, Debug)]
#[command(name = "synevi-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Fewer transactions and round trips: a smoke run of a minute or two.
    #[arg(long, global = true)]
    quick: bool,

    /// Transactions per matrix workload [default: 20000; with --quick 2000]. For `long`:
    /// stop after this many (e.g. 10000000) unless --duration ends it first.
    #[arg(long, global = true)]
    txns: Option<u64>,

    /// `long` only: stop after this long (e.g. 10m, 90s) [default: 10m; with --quick 30s,
    /// unless --txns is given].
    #[arg(long, global = true, value_parser = plan::parse_duration)]
    duration: Option<Duration>,

    /// Where to write the JSON report [default: target/bench-results.json; for `long`
    /// target/bench-long.json].
    #[arg(long, global = true)]
    json: Option<PathBuf>,

    /// Where LMDB stores are created (one fresh directory per cluster, removed after it).
    #[arg(long, global = true, default_value = "target/bench-data")]
    data_dir: PathBuf,

    /// The network of the matrix and the long run; `local` measures the protocol without
    /// gRPC (the seed's workloads and the floor always use gRPC).
    #[arg(long, global = true, value_enum, default_value_t = NetworkKind::Grpc)]
    network: NetworkKind,

    /// Cluster sizes of the matrix [default: 3,5]; the long run uses the first [default: 3].
    #[arg(long, global = true, value_delimiter = ',')]
    nodes: Vec<u16>,

    /// Concurrent clients of the matrix [default: 1,64,256]; the long run uses the first
    /// [default: 64].
    #[arg(long, global = true, value_delimiter = ',')]
    clients: Vec<usize>,

    /// Stores of the matrix [default: mem,lmdb]; the long run uses the first [default: lmdb,
    /// because a MemStore keeps the whole event log in memory by design].
    #[arg(long, global = true, value_delimiter = ',', value_enum)]
    stores: Vec<StoreKind>,

    /// Key modes of the matrix [default: disjoint,hot; a Keys::All run at the most clients is
    /// always added]; the long run uses the first [default: disjoint].
    #[arg(long, global = true, value_delimiter = ',', value_enum)]
    keys: Vec<KeyMode>,

    /// Only run workloads whose name contains this (e.g. `3n-mem-disjoint`, `seed`).
    #[arg(long, global = true)]
    only: Option<String>,

    /// The nodes' `Config::pre_accept_window_ms` (how long a replica holds PreAccepts back
    /// on a contended key; 0 turns it off) [default: the library's default].
    #[arg(long, global = true)]
    pre_accept_window_ms: Option<u64>,

    /// The nodes' `Config::idle_spin_us` (how long a node's core thread looks for its next
    /// input before it sleeps; 0 turns it off) [default: the library's default].
    #[arg(long, global = true)]
    idle_spin_us: Option<u64>,

    /// Where each node's core runs: `runtime`, a task on the harness's runtime beside the
    /// other nodes' (`Config::core_on_own_thread` off: for several nodes in one process on
    /// few cores), or `thread`, a thread of its own per node (the library's default, for a
    /// node per machine).
    #[arg(long, global = true, value_enum, default_value_t = CoreSite::Runtime)]
    core: CoreSite,

    /// LMDB stores: whether commits go through the store's commit log (one flush per commit,
    /// LMDB written at checkpoints; `LmdbConfig::commit_log`) or straight into LMDB (two
    /// flushes per commit).
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set)]
    commit_log: bool,

    /// LMDB stores with the commit log: `LmdbConfig::checkpoint_interval`, in milliseconds
    /// [default: the library's default].
    #[arg(long, global = true)]
    checkpoint_interval_ms: Option<u64>,

    /// How long mimalloc keeps freed memory before it returns it to the operating system,
    /// in milliseconds (`mi_option_purge_delay`; -1: never, 1000: mimalloc's own default).
    /// Returned memory that is needed again is faulted back in and zeroed by the kernel,
    /// which on the virtual machine of docs/benchmarks.md costs five times reused memory;
    /// purging made the loaded workloads' throughput wander with when it struck. Ignored
    /// by `--no-default-features` (the platform's allocator) [default: -1].
    #[arg(long, global = true, default_value_t = -1, allow_negative_numbers = true)]
    purge_delay_ms: i64,

    /// `long` only: seconds between memory samples.
    #[arg(long, global = true, default_value = "5s", value_parser = plan::parse_duration)]
    sample_every: Duration,

    /// No progress bars.
    #[arg(long, global = true)]
    no_progress: bool,

    /// Skip the floor (when profiling one workload); the latency target is then not
    /// evaluated.
    #[arg(long, global = true)]
    no_floor: bool,

    /// Measure the floor and every workload this many times, round after round (the floor,
    /// the seed's workloads and the matrix, then all of them again), and report each
    /// workload's round with the median throughput and the floor's with the median round
    /// trip; every round's throughput is in the JSON (`rounds_tps`). A workload's rounds are
    /// minutes apart, so a slow phase of the machine (see docs/benchmarks.md) falls on one
    /// round of every workload rather than on all rounds of some. Odd counts are best.
    #[arg(long, global = true, default_value_t = 1)]
    rounds: usize,

    /// Run every workload in this process, one after the other, instead of each in a fresh
    /// process of its own. What one workload leaves behind (its allocator's state, above
    /// all) then carries into the next: with mimalloc, one hot key with 3 nodes and 256
    /// clients measured 5 to 20 % slower after the five workloads before it than alone.
    #[arg(long, global = true)]
    in_process: bool,

    /// Internal: run the one workload of this JSON (a `WorkloadSpec`) and write its result
    /// as JSON to `--json`; the harness starts itself so for each workload.
    #[arg(long, hide = true)]
    workload_spec: Option<String>,

    /// Internal: the progress bar's label in a workload's own process.
    #[arg(long, hide = true, default_value = "")]
    label: String,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// The floor, the seed's workloads and the matrix, then the targets (the default).
    All,
    /// Only the floor: bare gRPC round trip and synced LMDB commit.
    Floor,
    /// Only the seed's workloads (with the floor, for the latency target).
    Seed,
    /// Only the matrix (with the floor, for the latency target).
    Matrix,
    /// The long run: closed-loop clients for --duration or --txns, memory sampled.
    Long,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    #[cfg(feature = "mimalloc")]
    set_purge_delay(cli.purge_delay_ms);
    if let Err(error) = run(cli).await {
        eprintln!("synevi-bench: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(spec) = &cli.workload_spec {
        return run_one(&cli, spec).await;
    }
    let command = cli.command.unwrap_or(Command::All);
    let json = cli.json.clone().unwrap_or_else(|| {
        PathBuf::from(if command == Command::Long {
            "target/bench-long.json"
        } else {
            "target/bench-results.json"
        })
    });
    let settings = Settings {
        quick: cli.quick,
        txns: cli.txns.unwrap_or(if cli.quick {
            plan::MATRIX_TXNS_QUICK
        } else {
            plan::MATRIX_TXNS
        }),
        network: cli.network,
        nodes: or_default(&cli.nodes, &[3, 5]),
        clients: or_default(&cli.clients, &[1, 64, 256]),
        stores: or_default(&cli.stores, &[StoreKind::Mem, StoreKind::Lmdb]),
        keys: or_default(&cli.keys, &[KeyMode::Disjoint, KeyMode::Hot]),
        only: cli.only.clone(),
        data_dir: cli.data_dir.clone(),
        pre_accept_window_ms: cli
            .pre_accept_window_ms
            .unwrap_or(synevi::Config::default().pre_accept_window_ms),
        idle_spin_us: cli
            .idle_spin_us
            .unwrap_or(synevi::Config::default().idle_spin_us),
        core: cli.core,
        commit_log: cli.commit_log,
        checkpoint_interval_ms: cli.checkpoint_interval_ms.unwrap_or_else(|| {
            synevi::persistence::LmdbConfig::default()
                .checkpoint_interval_duration()
                .as_millis() as u64
        }),
        purge_delay_ms: cfg!(feature = "mimalloc").then_some(cli.purge_delay_ms),
    };
    anyhow::ensure!(settings.txns > 0, "--txns must be above 0");
    anyhow::ensure!(
        settings.nodes.iter().all(|&n| n >= 1) && settings.clients.iter().all(|&c| c >= 1),
        "--nodes and --clients must be at least 1"
    );
    let started = Instant::now();
    let mut report = Report {
        harness: env!("CARGO_PKG_VERSION").to_string(),
        command: std::env::args().collect(),
        started_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        duration_s: 0.0,
        machine: Machine::describe(),
        load_average_at_end: None,
        settings: serde_json::to_value(&settings).context("settings serialise")?,
        floor: None,
        workloads: Vec::new(),
        long_run: None,
        targets: Vec::new(),
    };
    eprintln!(
        "synevi-bench: {} cores, load average {}; report goes to {}",
        report.machine.cores,
        report
            .machine
            .load_average_at_start
            .map_or("unknown".into(), |[one, ..]| format!("{one:.2}")),
        json.display()
    );
    let outcome = execute(command, &cli, &json, &settings, &mut report).await;
    report.duration_s = started.elapsed().as_secs_f64();
    report.load_average_at_end = machine::load_average();
    report.targets = targets::evaluate(
        report.floor.as_ref(),
        &report.workloads,
        report.long_run.as_ref(),
    );
    // Whatever was measured is written, also when a later part failed.
    report.write_json(&json)?;
    println!("{}", report.render());
    eprintln!("synevi-bench: wrote {}", json.display());
    outcome
}

fn or_default<T: Clone>(given: &[T], default: &[T]) -> Vec<T> {
    if given.is_empty() {
        default.to_vec()
    } else {
        given.to_vec()
    }
}

async fn execute(
    command: Command,
    cli: &Cli,
    json: &Path,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    if command == Command::Long {
        report.long_run = Some(long(cli, settings).await?);
        return Ok(());
    }
    anyhow::ensure!(cli.rounds >= 1, "--rounds must be at least 1");
    let mut specs: Vec<WorkloadSpec> = Vec::new();
    if matches!(command, Command::All | Command::Seed) {
        specs.extend(settings.seed_workloads());
    }
    if matches!(command, Command::All | Command::Matrix) {
        specs.extend(settings.matrix_workloads());
    }
    let count = specs.len();
    let mut floors: Vec<Floor> = Vec::new();
    let mut rounds: Vec<Vec<WorkloadResult>> = vec![Vec::new(); count];
    for round in 1..=cli.rounds {
        let of_rounds = if cli.rounds > 1 {
            format!("round {round}/{}, ", cli.rounds)
        } else {
            String::new()
        };
        if !cli.no_floor || command == Command::Floor {
            let progress = bar(cli, "floor", 0);
            let floor = floor::measure(settings.floor_counts(), &settings.data_dir, &progress)
                .await
                .context("measuring the floor")?;
            progress.finish_and_clear();
            eprintln!("{}", floor_line(&floor));
            floors.push(floor);
            report.floor = median_floor(&floors);
        }
        for (i, spec) in specs.iter().enumerate() {
            let label = format!("[{of_rounds}{}/{count}] {}", i + 1, spec.name);
            let result = if cli.in_process {
                let progress = bar(cli, &label, spec.load.total());
                let result = workload::run(spec, &progress).await;
                progress.finish_and_clear();
                result
            } else {
                run_in_own_process(cli, spec, &label).await
            }
            .with_context(|| format!("workload {}", spec.name))?;
            eprintln!("{}", report::line(&result));
            rounds[i].push(result);
            // Keep what was measured if a later workload fails or the run is interrupted:
            // the medians of the rounds so far.
            report.workloads = rounds
                .iter()
                .filter_map(|measured| workload::median_round(measured.clone()))
                .collect();
            report.write_json(json)?;
        }
    }
    if cli.rounds > 1 {
        eprintln!("\nmedians of {} rounds", cli.rounds);
        if let Some(floor) = &report.floor {
            eprintln!("{}", floor_line(floor));
        }
        for result in &report.workloads {
            eprintln!("{}", report::line(result));
        }
    }
    Ok(())
}

fn floor_line(floor: &Floor) -> String {
    format!(
        "{:<24} gRPC round trip p50 {} µs ({:.0}/s), {:.0} messages/s pipelined, fan-out p50 {} µs, LMDB commit p50 {} µs ({:.0}/s){}",
        "floor",
        floor.grpc_ping_pong.latency.p50_us,
        floor.grpc_ping_pong.round_trips_per_s,
        floor.grpc_pipelined.messages_per_s,
        floor.grpc_fan_out.latency.p50_us,
        floor.lmdb_commit.latency.p50_us,
        floor.lmdb_commit.commits_per_s,
        floor.log_commit.as_ref().map_or(String::new(), |log| format!(
            ", through the commit log p50 {} µs ({:.0}/s)",
            log.latency.p50_us, log.commits_per_s
        ))
    )
}

/// The floor of the round whose bare gRPC round trip was the median
/// ([`workload::median_position`]), carrying every round's round trip.
fn median_floor(floors: &[Floor]) -> Option<Floor> {
    let round_trips: Vec<u64> = floors
        .iter()
        .map(|floor| floor.grpc_ping_pong.latency.p50_us)
        .collect();
    let figures: Vec<f64> = round_trips.iter().map(|&us| us as f64).collect();
    let mut median = floors[workload::median_position(&figures)?].clone();
    if floors.len() > 1 {
        median.rounds_round_trip_p50_us = round_trips;
    }
    Some(median)
}

/// Runs `spec` in a fresh process of this binary (`--workload-spec`), so that it starts
/// from the same state whatever ran before it, and reads back its result.
async fn run_in_own_process(
    cli: &Cli,
    spec: &WorkloadSpec,
    label: &str,
) -> anyhow::Result<workload::WorkloadResult> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let out = tempfile::NamedTempFile::new().context("a file for the workload's result")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--workload-spec")
        .arg(serde_json::to_string(spec).context("workload serialises")?)
        .arg("--json")
        .arg(out.path())
        .arg("--label")
        .arg(label)
        .arg("--purge-delay-ms")
        .arg(cli.purge_delay_ms.to_string())
        .stdin(std::process::Stdio::null());
    if cli.no_progress {
        command.arg("--no-progress");
    }
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .context("waiting for the workload's process")?
        .context("starting the workload's process")?;
    anyhow::ensure!(status.success(), "the workload's process failed: {status}");
    let json = std::fs::read(out.path()).context("reading the workload's result")?;
    serde_json::from_slice(&json).context("the workload's result does not parse")
}

/// In a workload's own process: runs the one workload and writes its result to `--json`.
async fn run_one(cli: &Cli, spec: &str) -> anyhow::Result<()> {
    let spec: WorkloadSpec =
        serde_json::from_str(spec).context("--workload-spec does not parse")?;
    let json = cli
        .json
        .as_ref()
        .context("--workload-spec needs --json, where its result goes")?;
    let label = if cli.label.is_empty() {
        &spec.name
    } else {
        &cli.label
    };
    let progress = bar(cli, label, spec.load.total());
    let result = workload::run(&spec, &progress).await?;
    progress.finish_and_clear();
    std::fs::write(
        json,
        serde_json::to_vec(&result).context("result serialises")?,
    )
    .with_context(|| format!("writing {}", json.display()))
}

async fn long(cli: &Cli, settings: &Settings) -> anyhow::Result<long_run::LongResult> {
    let duration = match (cli.duration, cli.txns) {
        (Some(duration), _) => Some(duration),
        (None, Some(_)) => None,
        (None, None) if cli.quick => Some(plan::LONG_DURATION_QUICK),
        (None, None) => Some(plan::LONG_DURATION),
    };
    let spec = LongSpec {
        cluster: synevi_benches::cluster::ClusterSpec {
            nodes: cli.nodes.first().copied().unwrap_or(3),
            network: settings.network,
            store: cli.stores.first().copied().unwrap_or(StoreKind::Lmdb),
            data_dir: settings.data_dir.clone(),
            pre_accept_window_ms: settings.pre_accept_window_ms,
            idle_spin_us: settings.idle_spin_us,
            core: settings.core,
            commit_log: settings.commit_log,
            checkpoint_interval_ms: settings.checkpoint_interval_ms,
        },
        clients: cli.clients.first().copied().unwrap_or(64),
        keys: cli.keys.first().copied().unwrap_or(KeyMode::Disjoint),
        txns: cli.txns.unwrap_or(u64::MAX),
        duration,
        sample_every: cli.sample_every,
    };
    eprintln!(
        "long run: {} nodes, {}, {}, {} keys, {} clients, until {}",
        spec.cluster.nodes,
        spec.cluster.network,
        spec.cluster.store,
        spec.keys,
        spec.clients,
        match (spec.duration, spec.txns) {
            (Some(duration), u64::MAX) => format!("{} s", duration.as_secs()),
            (Some(duration), txns) => format!("{txns} transactions or {} s", duration.as_secs()),
            (None, txns) => format!("{txns} transactions"),
        }
    );
    let progress = bar(cli, "long run", 0);
    let result = long_run::run(&spec, &progress)
        .await
        .context("the long run")?;
    progress.finish_and_clear();
    Ok(result)
}

/// A progress bar on stderr (hidden when stderr is not a terminal or with --no-progress).
fn bar(cli: &Cli, name: &str, length: u64) -> ProgressBar {
    if cli.no_progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix:<32} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(name.to_string());
    bar
}
