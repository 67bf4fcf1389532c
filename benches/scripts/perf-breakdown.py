#!/usr/bin/env python3
"""Summarises a `perf record --call-graph dwarf` profile of synevi-bench by component.

Usage: perf script -i perf.data | python3 benches/scripts/perf-breakdown.py

Each sample is charged to the component its stack runs in (the core's state machine, the
persister, the executor, gRPC sending, gRPC receiving, the harness's clients, the tokio
scheduler) and to what its leaf does (kernel: futex / scheduling / TCP; allocator; memcpy;
protobuf encoding and decoding; the rest). Prints the shares of all samples.
"""
import collections
import re
import sys

COMPONENTS = [
    # (name, frame substrings, checked from the root of the stack towards the leaf; the
    # innermost match wins)
    ("harness clients", ["synevi_benches::workload"]),
    ("floor (harness)", ["synevi_benches::floor"]),
    ("gRPC receive", ["synevi_network::grpc::server"]),
    ("gRPC send", ["synevi_network::grpc::peer"]),
    ("persister", ["persist_loop"]),
    ("executor", ["execute_loop"]),
    ("core", ["core_loop", "synevi_core::core::Core", "synevi_core::driver::workers::spawn"]),
    ("HTTP/2 connections (hyper, h2)", ["h2::", "hyper::"]),
    ("tokio scheduler", ["tokio::runtime::scheduler"]),
]

LEAVES = [
    ("kernel: futex (thread wake/wait)", lambda s: any("futex" in f for f in s)),
    ("kernel: epoll", lambda s: any("epoll" in f for f in s)),
    ("kernel: TCP send/receive", lambda s: any(k in f for f in s for k in ("tcp_", "sock_", "__x64_sys_writev", "__x64_sys_recvfrom", "__x64_sys_sendto", "__x64_sys_read", "__x64_sys_write"))),
    ("kernel: fsync/disk", lambda s: any(k in f for f in s for k in ("fsync", "fdatasync", "ext4", "xfs_", "blk_"))),
    ("kernel: other", lambda s: s and s[0].endswith("[k]")),
    ("protobuf encode", lambda s: any(("prost" in f or "wire::" in f) and ("encode" in f or "encoded_len" in f) for f in s[:12])),
    ("protobuf decode", lambda s: any(("prost" in f or "wire::" in f) and ("merge" in f or "decode" in f or "_from" in f) for f in s[:12])),
    ("allocator", lambda s: any(k in s[0] for k in ("malloc", "free", "realloc", "_int_", "unlink_chunk", "cfree"))),
    ("memcpy", lambda s: "memmove" in s[0] or "memcpy" in s[0]),
    ("other user code", lambda s: True),
]


def parse(stream):
    stack = []
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = []
            continue
        if line[0] not in " \t":
            # sample header
            stack = []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        frame = parts[1]
        kernel = "[kernel.kallsyms]" in frame
        frame = re.sub(r"\s*\(.*\)$", "", frame)
        stack.append(frame + (" [k]" if kernel else ""))
    if stack:
        yield stack


def main():
    table = collections.Counter()
    total = 0
    for stack in parse(sys.stdin):
        total += 1
        component = "other"
        for name, needles in COMPONENTS:
            if any(n in f for f in stack for n in needles):
                component = name
                break
        for name, test in LEAVES:
            if test(stack):
                leaf = name
                break
        table[(component, leaf)] += 1
    if total == 0:
        print("no samples")
        return
    components = collections.Counter()
    leaves = collections.Counter()
    for (c, l), n in table.items():
        components[c] += n
        leaves[l] += n
    print(f"{total} samples")
    print("\nby component")
    for c, n in components.most_common():
        print(f"  {100 * n / total:5.1f} %  {c}")
    print("\nby what the leaf does")
    for l, n in leaves.most_common():
        print(f"  {100 * n / total:5.1f} %  {l}")
    print("\ncomponent x leaf (>= 1 %)")
    for (c, l), n in table.most_common():
        if 100 * n / total >= 1:
            print(f"  {100 * n / total:5.1f} %  {c:<22} {l}")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        pass
