#!/usr/bin/env python3
"""Prints the workloads, the floor and the targets of a synevi-bench JSON report as the
Markdown tables of docs/benchmarks.md.

Usage: python3 benches/scripts/table-md.py target/bench-results.json [target/bench-long.json]
"""
import json
import sys


def ms(us):
    return f"{us / 1000:.2f}"


def stolen_cell(workload):
    """The stolen-time column's cell: the host's share for other guests, or a dash."""
    share = workload.get("stolen_share")
    return "– | " if share is None else f"{100 * share:.0f} | "


def core_placement(report):
    """Where the nodes' cores ran (`--core`; reports before it had a thread each)."""
    core = report.get("settings", {}).get("core", "thread")
    return (
        "the nodes' cores as tasks of the harness's runtime (`--core runtime`); "
        if core == "runtime"
        else "a thread per node's core (`--core thread`); "
    )


def main():
    report = json.load(open(sys.argv[1]))
    machine = report["machine"]
    allocator = machine.get("allocator", "system")
    purge = report.get("settings", {}).get("purge_delay_ms")
    if allocator == "mimalloc" and purge is not None:
        allocator += " (purge delay: never)" if purge < 0 else f" (purge delay {purge} ms)"
    print(
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, "
        f"{machine['memory_mib'] // 1024} GiB, Linux {machine['kernel']}; "
        f"commit `{machine['git_commit']}`; allocator {allocator}; "
        f"{core_placement(report)}"
        f"load average "
        f"{machine['load_average_at_start'][0]:.2f} at start, "
        f"{report['load_average_at_end'][0]:.2f} at end; "
        f"the run took {report['duration_s']:.0f} s.\n"
    )
    floor = report.get("floor")
    if floor:
        ping, pipe, lmdb = floor["grpc_ping_pong"], floor["grpc_pipelined"], floor["lmdb_commit"]
        print("| floor | figure |")
        print("|---|---|")
        rounds = floor.get("rounds_round_trip_p50_us")
        of_rounds = f" (the median round; p50 of each: {', '.join(map(str, rounds))} µs)" if rounds else ""
        print(
            f"| bare gRPC round trip, 1 in flight | p50 {ping['latency']['p50_us']} µs, "
            f"p99 {ping['latency']['p99_us']} µs, {ping['round_trips_per_s']:.0f} round trips/s{of_rounds} |"
        )
        print(
            f"| gRPC, {pipe['window']} in flight | {pipe['messages_per_s']:.0f} messages/s, "
            f"{pipe['cpu_per_message_us']:.1f} µs CPU per message |"
        )
        fan = floor.get("grpc_fan_out")
        if fan:
            print(
                f"| gRPC fan-out to {fan['peers']} peers, 1 at a time | answer {fan['answers_awaited']} "
                f"of {fan['peers']}: p50 {fan['latency']['p50_us']} µs, p99 {fan['latency']['p99_us']} µs |"
            )
        print(
            f"| LMDB synced commit | p50 {lmdb['latency']['p50_us']} µs, "
            f"p99 {lmdb['latency']['p99_us']} µs, {lmdb['commits_per_s']:.0f} commits/s |"
        )
        log = floor.get("log_commit")
        if log:
            print(
                f"| LMDB store commit through its commit log | p50 {log['latency']['p50_us']} µs, "
                f"p99 {log['latency']['p99_us']} µs, {log['commits_per_s']:.0f} commits/s |"
            )
        if floor.get("stolen_share") is not None:
            print(f"| CPU time stolen by the host meanwhile | {100 * floor['stolen_share']:.0f} % |")
        print()
    # With --rounds, each row is the round with the median throughput; the others' range
    # gets a column of its own.
    rounds = any(w.get("rounds_tps") for w in report["workloads"])
    # Reports from before the harness read stolen time have no such column.
    stolen = any(w.get("stolen_share") is not None for w in report["workloads"])
    print(
        "| workload | store | keys | in flight | txns | txns/s | "
        + ("rounds' txns/s | " if rounds else "")
        + "p50 ms | p99 ms | max ms | CPU µs/txn | CPU % | "
        + ("stolen % | " if stolen else "")
        + "fast % | msgs/txn |"
    )
    print(
        "|---|---|---|--:|--:|--:|" + ("--:|" if rounds else "") + "--:|--:|--:|--:|--:|"
        + ("--:|" if stolen else "") + "--:|--:|"
    )
    for w in report["workloads"]:
        lat = w["latency"]
        spread = ""
        if rounds:
            each = w.get("rounds_tps") or [w["throughput_tps"]]
            spread = f"{min(each):.0f}–{max(each):.0f} | "
        print(
            f"| {w['name']} | {w['store']} | {w['keys']} | {w['concurrency']} | "
            f"{w['committed']} | {w['throughput_tps']:.0f} | {spread}{ms(lat['p50_us'])} | "
            f"{ms(lat['p99_us'])} | {ms(lat['max_us'])} | {w['cpu_per_txn_us']:.0f} | "
            f"{100 * w['cpu_utilisation']:.0f} | {stolen_cell(w) if stolen else ''}"
            f"{100 * w['fast_path_share']:.0f} | "
            f"{w['messages_per_txn']:.1f} |"
        )
    print()
    print("| target | ratio | needs | verdict | figures |")
    print("|---|--:|---|---|---|")
    for t in report["targets"]:
        ratio = "" if t["ratio"] is None else f"{t['ratio']:.2f}"
        print(f"| {t['name']} | {ratio} | {t['requirement']} | {t['verdict'].upper()} | {t['detail']} |")
    if len(sys.argv) > 2:
        long = json.load(open(sys.argv[2]))
        print()
        for t in long["targets"]:
            print(f"Long run: {t['verdict']} — {t['name']}: {t['detail']}")


if __name__ == "__main__":
    main()
