"""Owner-only files and directories for hpcfleet's local state (HPCFLEET_HOME).

The registry database holds every partner's run specs and the code that travels with
them; MLflow's store, artifacts and the orchestrator logs hold results and job output.
None of that is for the other users of the machine, whatever their umask gives: what
hpcfleet creates here is 0700 (directories) or 0600 (files) from the start, and a home
left readable by an older version is made owner-only when opened (`secure_home`).

SQLite creates its -wal and -shm files with the mode of the database file, so creating
the database file owner-only is enough for all three.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600

# What the embedded default keeps directly under the home (INTERFACE.md, "Configuration").
HOME_ENTRIES = (
    "registry.db",
    "registry.db-wal",
    "registry.db-shm",
    "mlflow.db",
    "mlflow.db-wal",
    "mlflow.db-shm",
    "mlartifacts",
    "logs",
    "sites",
    "prefect",
    "server",
)


def private_dir(path: Path) -> Path:
    """Create `path` and its missing parents as 0700; existing directories are left as
    they are (a parent such as /tmp is not ours to change)."""
    if not path.is_dir():
        if path.exists() or path.is_symlink():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        private_dir(path.parent)
        # exist_ok: made by someone else in the meantime.
        path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty as 0600 unless it exists (its parents as 0700)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return path
    os.close(fd)
    return path


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URL; None for memory or other databases."""
    scheme, sep, rest = url.partition(":///")
    if not sep or not scheme.startswith("sqlite"):
        return None
    path = rest.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def private_sqlite(url: str) -> None:
    """Create the file of a SQLite URL owner-only before SQLite creates it under the umask."""
    path = sqlite_file(url)
    if path is not None:
        private_file(path)


def open_to_others(path: Path) -> int | None:
    """The mode of `path` if it is ours and group or others have any right on it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.getuid() or not mode & 0o077:
        return None
    return mode


def secure_home(home: Path) -> str | None:
    """Create `home` owner-only, or make it and what hpcfleet keeps in it owner-only.

    Returns a one-line notice naming what was changed (or could not be), or None. Only
    an open home gets a notice: behind an owner-only home nothing was exposed (Prefect,
    for one, creates its directory there under the umask).
    """
    if not home.exists():
        private_dir(home)  # a home that cannot be made is the command's error, not a notice
        return None
    try:
        was_open = open_to_others(home) is not None
        changed = []
        for path in (home, *(home / name for name in HOME_ENTRIES)):
            mode = open_to_others(path)
            if mode is None:
                continue
            private = PRIVATE_DIR if path.is_dir() else PRIVATE_FILE
            path.chmod(private)
            changed.append(f"{'.' if path == home else path.name} {mode:o}->{private:o}")
    except OSError as exc:
        return f"cannot make {home} owner-only: {exc.strerror or exc}"
    if not was_open:
        return None
    return f"made {home} owner-only, as hpcfleet now keeps it: {', '.join(changed)}"
