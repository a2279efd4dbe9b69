"""Where pipeline entries come from. The framework registers its own stages and steps (probe, split, dedup,
concepts, tiers); every other package registers its own through the entry-point group
`videocurate.stages`, whose value is a dict `{name: "module:Class"}` (this project's `filters` and
`captioner` do it in pyproject.toml exactly as a third-party package would). Classes are imported only
when a pipeline names them. `register()` adds one at run time (notebooks, tests)."""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points

from curation.errors import ConfigError

GROUP = "videocurate.stages"
CORE = {
    "probe": "curation.probe:ProbeStage",
    "split": "curation.split:SplitStage",
    "dedup": "curation.dedup:DedupStep",
    "concepts": "curation.concepts:ConceptStep",
    "tiers": "curation.tiers:TierStep",
}
_extra: dict[str, str | type] = {}


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, tuple[str, str | type]]:
    """name → (package that registered it, target) over the framework and every installed plugin."""
    found: dict[str, tuple[str, str | type]] = {n: ("curation", t) for n, t in CORE.items()}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            table = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin names itself
            raise ConfigError(f"plugin '{ep.name}' ({ep.value}) in entry-point group {GROUP} failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc
        for name, target in dict(table).items():
            if name in found and found[name][1] != target:
                raise ConfigError(f"stage name '{name}' is registered twice: by '{found[name][0]}' and by "
                                  f"'{ep.name}'")
            found[name] = (ep.name, target)
    return found


def names() -> list[str]:
    return sorted({*_installed(), *_extra})


def register(name: str, target: str | type) -> None:
    """Make a stage or step class (or its "module:Class" path) available under `name` in this process.
    Ray workers receive stage objects, not names, so this is enough for the runner too."""
    _extra[name] = target


def unregister(name: str) -> None:
    _extra.pop(name, None)


def resolve(name: str) -> type:
    """The class registered under `name`."""
    target = _extra.get(name) or _installed().get(name, (None, None))[1]
    if target is None:
        raise ConfigError(f"unknown stage or step '{name}'; registered: {names()} (plugins register in the "
                          f"'{GROUP}' entry-point group; reinstall the package if one is missing)")
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
