"""keep_freed_memory: after it, a large buffer freed and allocated again comes back without page faults.

Run in a subprocess: the setting is for the whole process and cannot be undone, and the test process should keep
glibc's defaults for the other tests."""
import subprocess
import sys

import pytest

# 40 MB buffers (above glibc's 32 MB cap on its mmap threshold, so by default each is a fresh mmap): allocate,
# touch, free, five times, and count the minor page faults, before and after keep_freed_memory()
PROBE = r"""
import resource, torch
from temt_core.cpu_memory import keep_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        buf = torch.empty(10_000_000)
        buf.fill_(1.0)
        del buf
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
applied = keep_freed_memory()
for _ in range(3):           # the first rounds after it still fault while the heap grows and settles (seen:
    faults()                 #  one or two rounds, then none)
kept = faults()
print(default, applied, kept, keep_freed_memory())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc (Linux) only")
def test_freed_buffers_are_reused_without_page_faults():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    default, applied, kept, again = int(out[0]), out[1] == "True", int(out[2]), out[3] == "True"
    if not applied:
        pytest.skip("the C library is not glibc")
    pages = 5 * 40_000_000 // 4096                       # 48,828 pages touched in all
    assert default > 0.8 * pages, f"glibc's default was expected to fault every page ({default} of {pages})"
    assert kept < 0.05 * pages, f"{kept} page faults after keep_freed_memory (of {pages} pages touched)"
    assert again, "a second call should report the setting as applied"
