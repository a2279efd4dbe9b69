"""Shared test set-up: offline, quiet, one embedded Ray per session, media made by code."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RUST_LOG", "error")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole session (starting Ray costs seconds). It declares one logical GPU so
    the GPU stage path (its own actor pool with num_gpus) runs end to end on CPU-only machines."""
    from curation.runner import init_ray

    init_ray(num_cpus=2, num_gpus=1)
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="session")
def bad_folder(tmp_path_factory):
    import media

    folder = tmp_path_factory.mktemp("bad")
    made = media.bad_inputs(str(folder))
    return str(folder), made


@pytest.fixture(scope="session")
def demo_videos(tmp_path_factory):
    from curation import synth

    folder = tmp_path_factory.mktemp("demo")
    return synth.demo_set(str(folder))


@pytest.fixture(autouse=True)
def lakes_stay_sound(request):
    """After every test that ran a pipeline into a lake under its tmp_path, `videocurate check` holds on
    that lake (tests that break a lake on purpose are marked `broken_lake`)."""
    yield
    tmp = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if tmp is None or request.node.get_closest_marker("broken_lake"):
        return
    from curation.check import check_lake, render

    for videos in sorted(tmp.rglob("videos.lance")):
        lake = str(videos.parent)
        problems = check_lake(lake)
        assert not problems, render(problems, lake)
