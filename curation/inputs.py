"""Input discovery: files, directories (walked recursively) and glob patterns → input files.

Every name found is an input (hidden files and folders excepted), so nothing disappears silently: a file
that is not a video, a broken symlink, a symlink loop (`a -> b -> a`), a FIFO, a file the pipeline may
not read, a name that is not UTF-8 — each ends as a `videos` row with a failure row whose kind says why
(the probe stage tells them apart; see curation.video.check_file). What cannot be an input is a problem
line of the run summary: a folder that cannot be listed ("cannot read directory ...: Permission denied"),
a directory symlink that leads back to a folder being walked, a path that matches nothing.

Symlinks are followed: a file symlink is an input under the link's path (its bytes are the target's),
a directory symlink is walked, and each real directory is walked once, so a symlink to a parent folder
(a loop) or a second way into a folder already walked is reported and not followed. A `**` glob is
matched on that same walk (Python's own glob follows a loop ~40 levels deep, and each extra loop doubles
the count). `extensions` narrows the walk when wanted. A file's stat is taken here (size, mtime): the
stages refuse a file that no longer has it (`changed_during_read`)."""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class InputFile:
    uri: str  # absolute path, as UTF-8 text (see uri_of)
    size_bytes: int
    mtime_ns: int


def uri_of(path: str) -> str:
    """The uri of an absolute path: the path itself, or for a name that is not valid UTF-8 (os.fsdecode's
    surrogate escapes, which Arrow cannot store) a stand-in with each undecodable byte written `\\xNN`;
    the probe stage fails such a file as `bad_file_name`, asking for it to be renamed."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def shown(path: str) -> str:
    """A path fit for a one-line message: control characters (a newline in a name) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def _walk(root: str, skip: tuple[str, ...], problems: list[str]) -> Iterator[str]:
    """Every non-hidden entry under `root` that is not a directory, depth first in name order, following
    directory symlinks with each real directory (device, inode) walked once. Iterative: no depth limit."""
    root = os.path.abspath(root)
    try:
        st = os.stat(root)
    except OSError as exc:
        problems.append(f"cannot read directory {shown(root)}: {exc.strerror}")
        return
    walked = {(st.st_dev, st.st_ino): root}
    stack = [(root, ((st.st_dev, st.st_ino),))]
    while stack:
        folder, chain = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            problems.append(f"cannot read directory {shown(folder)}: {exc.strerror}")
            continue
        dirs = []
        for e in entries:
            try:
                is_dir = e.is_dir()  # through symlinks
            except OSError:
                is_dir = False
            if is_dir:
                dirs.append(e)
            else:
                yield e.path
        keep: dict[str, tuple] = {}
        for e in sorted(dirs, key=lambda e: e.is_symlink()):  # a real folder is claimed before a link to it
            try:
                st = e.stat()
            except OSError as exc:
                problems.append(f"cannot read directory {shown(e.path)}: {exc.strerror}")
                continue
            key = (st.st_dev, st.st_ino)
            if skip and (os.path.join(os.path.realpath(e.path), "").startswith(skip)
                         or os.path.join(os.path.abspath(e.path), "").startswith(skip)):
                continue
            link = f" -> {shown(os.readlink(e.path))}" if e.is_symlink() else ""
            if key in chain:
                problems.append(f"symlink loop: {shown(e.path)}{link} leads back to {shown(walked[key])}, a folder "
                                "being walked; not followed")
            elif key in walked:
                problems.append(f"{shown(e.path)}{link} is the folder {shown(walked[key])} again; walked once")
            else:
                walked[key] = e.path
                keep[e.path] = chain + (key,)
        stack.extend((p, keep[p]) for p in sorted(keep, reverse=True))


def _glob(pattern: str, skip: tuple[str, ...], problems: list[str]) -> list[str]:
    """Glob matches; a `**` pattern is matched on a loop-safe walk of its fixed leading folders (an entry
    matches when it, or a folder above it, matches the pattern, as glob's folder matches get walked)."""
    if "**" not in pattern:
        return sorted(glob.glob(pattern))
    parts = pattern.split(os.sep)
    fixed = next(i for i, p in enumerate(parts) if glob.has_magic(p))
    base = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else ".")
    segs = parts[fixed:]
    if not os.path.isdir(base):
        return []
    out = []
    for path in _walk(base, skip, problems):
        rel = os.path.relpath(path, base).split(os.sep)
        if any(_match(segs, rel[:k]) for k in range(1, len(rel) + 1)):
            out.append(path)
    return out


def _match(segs: list[str], parts: list[str]) -> bool:
    """Path segments against pattern segments, `**` standing for any number of folders."""
    if not segs:
        return not parts
    if segs[0] == "**":
        return any(_match(segs[1:], parts[k:]) for k in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], segs[0]) and _match(segs[1:], parts[1:])


def _input(path: str) -> InputFile:
    """The stat through symlinks; for a broken or looping symlink the link's own (its target fixed, the
    stat changes and the next run takes it again); zeros when neither can be read (the probe says why)."""
    for fn in (os.stat, os.lstat):
        try:
            st = fn(path)
        except OSError:
            continue
        return InputFile(uri_of(path), st.st_size if stat.S_ISREG(st.st_mode) else 0, st.st_mtime_ns)
    return InputFile(uri_of(path), 0, 0)


def discover(paths: Iterable[str], extensions: Iterable[str] | None = None,
             exclude: Iterable[str] = ()) -> tuple[list[InputFile], list[str]]:
    """Return (input files, problems). A path that matches nothing is reported, not fatal. Files under
    an `exclude` directory (the lake itself, when it sits inside an input folder) are never inputs."""
    exts = {e.lower().lstrip(".") for e in extensions} if extensions else None
    excluded = [os.fspath(e) for e in exclude]
    skip = tuple({os.path.join(f(e), "") for e in excluded for f in (os.path.abspath, os.path.realpath)})
    seen: dict[str, InputFile] = {}
    problems: list[str] = []
    for raw in paths:
        raw = os.fspath(raw)
        try:
            os.lstat(raw)
            matches = [raw]
        except (FileNotFoundError, NotADirectoryError):
            matches = _glob(raw, skip, problems)
        except OSError as exc:  # e.g. a folder above it that may not be entered
            problems.append(f"cannot read {shown(raw)}: {exc.strerror}")
            continue
        if not matches:
            problems.append(f"no such file, directory or glob match: {shown(raw)}")
        for m in matches:
            candidates = _walk(m, skip, problems) if os.path.isdir(m) else [m]
            for c in candidates:
                if exts is not None and os.path.splitext(c)[1].lower().lstrip(".") not in exts:
                    continue
                path = os.path.abspath(c)
                if skip and path.startswith(skip):
                    continue
                if uri_of(path) not in seen:
                    seen[uri_of(path)] = _input(path)
    return sorted(seen.values(), key=lambda f: f.uri), list(dict.fromkeys(problems))
