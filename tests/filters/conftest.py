"""Fixtures for the filter tests (helpers live in filter_media.py)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests run with --import-mode=importlib: put this folder on sys.path for the filter_media helpers.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def vids(tmp_path_factory):
    """Lazily made, cached fixture videos: vids("name", [Shot...], size=...)."""
    from filter_media import SIZE, video

    folder = tmp_path_factory.mktemp("filters_videos")
    made: dict = {}

    def get(name: str, shots: list, size=SIZE, **encode):
        if name not in made:
            made[name] = video(folder, name, shots, size=size, **encode)
        return made[name]

    get.folder = folder
    return get
