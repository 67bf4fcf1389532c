#!/usr/bin/env python3
"""Charges every sample of a `perf record --call-graph dwarf` profile to the innermost frame
that belongs to synevi (or to a given prefix), so library time (allocator, prost, hash maps,
the kernel) counts for the synevi function that caused it.

Usage: perf script -i perf.data | python3 benches/scripts/perf-by-function.py [prefix ...]
"""
import collections
import re
import sys

prefixes = sys.argv[1:] or ["synevi_"]
counts = collections.Counter()
total = 0
stack = []


def flush():
    global total
    if not stack:
        return
    total += 1
    for frame in stack:
        if any(p in frame for p in prefixes) and "synevi_benches" not in frame:
            name = re.sub(r"::\{\{closure\}\}", "", frame)
            counts[name] += 1
            return
    counts["(no synevi frame: runtime, hyper/h2 tasks, kernel)"] += 1


for line in sys.stdin:
    line = line.rstrip("\n")
    if not line.strip():
        flush()
        stack = []
        continue
    if line[0] not in " \t":
        stack = []
        continue
    parts = line.strip().split(None, 1)
    if len(parts) == 2:
        stack.append(re.sub(r"\+0x[0-9a-f]+$", "", re.sub(r"\s*\(.*\)$", "", parts[1]).replace(" (inlined)", "")))
flush()
try:
    print(f"{total} samples")
    for name, n in counts.most_common(25):
        print(f"  {100 * n / total:5.1f} %  {name[:150]}")
except BrokenPipeError:
    pass
