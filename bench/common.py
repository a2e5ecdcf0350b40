"""Shared measuring helpers for the bench/ scripts: wall time and peak memory of one call.

Peak memory on GPU is torch.cuda.max_memory_allocated. On CPU there is no allocator counter, so we reset the
process's peak resident set (Linux: write "5" to /proc/self/clear_refs) and read VmHWM after the call: the peak
is then "resident memory at its highest during the call minus resident memory before it", which counts every
tensor, activation and temporary the call created.
"""

import re
import statistics
import time

import torch


def _resident_kib(field):
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1))


def measure(fn, repeats=3, warmup=1):
    """(median seconds, peak extra bytes) of fn() over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times, peaks = [], []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            open("/proc/self/clear_refs", "w").write("5")
            before = _resident_kib("VmRSS") * 1024
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated() - before)
        else:
            peaks.append(_resident_kib("VmHWM") * 1024 - before)
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(peaks)


def mib(n):
    return f"{n / 2 ** 20:.0f} MiB"
