"""Input discovery: files, directories (walked recursively) and glob patterns → regular files.

Every regular file found is an input (hidden files and folders excepted): a file that is not a video
ends as a failure row, so nothing disappears silently. `extensions` narrows the walk when wanted."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class InputFile:
    uri: str  # absolute path
    size_bytes: int
    mtime_ns: int


def _walk(root: str) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield os.path.join(dirpath, name)


def discover(paths: Iterable[str], extensions: Iterable[str] | None = None,
             exclude: Iterable[str] = ()) -> tuple[list[InputFile], list[str]]:
    """Return (input files, problems). A path that matches nothing is reported, not fatal. Files under
    an `exclude` directory (the lake itself, when it sits inside an input folder) are never inputs."""
    exts = {e.lower().lstrip(".") for e in extensions} if extensions else None
    skip = tuple(os.path.join(os.path.abspath(e), "") for e in exclude)
    seen: dict[str, InputFile] = {}
    problems: list[str] = []
    for raw in paths:
        matches = [raw] if os.path.exists(raw) else sorted(glob.glob(raw, recursive=True))
        if not matches:
            problems.append(f"no such file, directory or glob match: {raw}")
        for m in matches:
            candidates = _walk(m) if os.path.isdir(m) else [m]
            for c in candidates:
                if exts is not None and os.path.splitext(c)[1].lower().lstrip(".") not in exts:
                    continue
                path = os.path.abspath(c)
                if skip and path.startswith(skip):
                    continue
                try:
                    st = os.stat(path)
                except OSError as exc:
                    problems.append(f"cannot stat {path}: {exc.strerror}")
                    continue
                if os.path.isfile(path) and path not in seen:
                    seen[path] = InputFile(path, st.st_size, st.st_mtime_ns)
    return sorted(seen.values(), key=lambda f: f.uri), problems
