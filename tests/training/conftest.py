"""Trainer tests: offline, seeded, single-threaded torch.

Tiny conv/attention kernels gain little from a second thread, and with any other load on a 2-core machine
OpenMP's spinning threads make them 10-30x slower; one thread keeps the runtime predictable.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seeded_single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def wait_for_checkpoint(proc, out, at_least: int = 3, timeout: float = 120.0) -> None:
    """Wait until the run writing `out` (a subprocess, still running) has checkpointed `at_least` steps."""
    import time

    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.is_file() and int(latest.read_text().split("-")[1]) >= at_least:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
