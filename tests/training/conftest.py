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
