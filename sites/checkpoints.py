"""Finding the checkpoints a running stage wrote: a pure command/parse pair, run inside
the one status command a site gets per poll (`sites.poll`).

The command lists, per watched stage, the directories `<outputs>/<parent>/<pattern>`
that hold the `ready` file, with that file's size, mtime and SHA-256. Hashing a ready
file is the one costly part: the caller passes the (stage, name, size, mtime) it has
hashed already, and those come back without a digest ("-"). The answer is
NUL-separated (a file name may hold a newline, never a NUL), four fields per entry:

    <watch index> NUL <relative dir> NUL <size> SP <mtime> NUL <sha256 or "-"> NUL

What comes back is input, never trusted: an entry whose name does not match its
pattern, holds anything but plain characters, or is not one directory under the
watched parent is left out (and named in `CheckpointListing.refused`); symbolic links
are not followed (a link could point out of the outputs).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from sites.remote import PICK_SHA256, shell_command

NOT_HASHED = "-"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")  # also a safe MLflow tag key part
_HEX = re.compile(r"^[0-9a-f]{64}$")
_STAT = re.compile(r"^([0-9]{1,20}) ([0-9]{1,20})$")
MARK = "@@hpcfleet-checkpoints-follow@@"  # between the status answer and the listing

# $1: known keys (newline-separated, "<index>/<dir>/<size> <mtime>"); then per watched
# stage three words: outputs dir, parent (relative, may be ""), pattern, ready file.
# The pattern is validated plain characters with `*`/`?`; it is expanded unquoted on
# purpose (set +f), nothing else is.
_LIST = (
    f"{PICK_SHA256}; "
    "known=\"$1\"; shift; i=0; set +f; nl=$(printf '\\nx'); nl=${nl%x}; "
    'while [ "$#" -ge 4 ]; do '
    "out=$1; parent=$2; pattern=$3; ready=$4; shift 4; "
    'if [ -n "$parent" ]; then base="$out/$parent"; else base="$out"; fi; '
    'if [ -d "$base" ] && [ ! -L "$base" ] && cd -- "$base" 2>/dev/null; then '
    "for d in $pattern; do "
    '[ -d "$d" ] && [ ! -L "$d" ] && [ -f "$d/$ready" ] && [ ! -L "$d/$ready" ] || continue; '
    "st=$(stat -c '%s %Y' -- \"$d/$ready\" 2>/dev/null) || continue; "
    'if [ -n "$parent" ]; then rel="$parent/$d"; else rel="$d"; fi; '
    'printf \'%s\\0%s\\0%s\\0\' "$i" "$rel" "$st"; '
    'case "$known" in *"$nl$i/$rel/$st$nl"*) printf \'%s\\0\' - ;; '
    '*) h=$($sha256 < "$d/$ready" 2>/dev/null | cut -c1-64); printf \'%s\\0\' "${h:--}" ;; '
    "esac; "
    "done; cd / || exit 1; "
    "fi; "
    "i=$((i+1)); "
    "done"
)


@dataclass(frozen=True)
class CheckpointWatch:
    """One running stage's checkpoints to look for on its site."""

    outputs: str  # absolute outputs dir of the stage on the site
    parent: str  # relative dir (validated by registry.runspec.Checkpoints), "" for outputs
    pattern: str  # the glob a checkpoint's name matches
    ready: str  # the file written last


@dataclass(frozen=True)
class FoundCheckpoint:
    """A finished checkpoint: `path` relative to the stage's outputs, `name` its own."""

    watch: int  # index of its CheckpointWatch in the command
    name: str
    path: str
    size: int  # of the ready file
    mtime: int
    sha256: str | None  # None: known already (not hashed again)

    @property
    def key(self) -> str:
        """What `checkpoints_command` is told to not hash again."""
        return f"{self.watch}/{self.path}/{self.size} {self.mtime}"


@dataclass(frozen=True)
class CheckpointListing:
    found: list[FoundCheckpoint] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # printable reprs of bad entries


def checkpoints_command(watches: Sequence[CheckpointWatch], known: Iterable[str] = ()) -> str:
    """The listing of every watch's ready checkpoints; `known` are `FoundCheckpoint.key`s
    hashed before (their digest is not computed again). Parser: `parse_checkpoints`."""
    if not watches:
        raise ValueError("no checkpoints to look for")
    known_text = "\n" + "".join(f"{key}\n" for key in known if "\n" not in key)
    words = [
        w for watch in watches for w in (watch.outputs, watch.parent, watch.pattern, watch.ready)
    ]
    return shell_command(_LIST, known_text, *words)


def with_listing(status_command: str, listing_command: str) -> str:
    """The status command and the listing as ONE command: the listing's answer follows
    a marker line; the exit status stays the status command's (`split_listing`)."""
    return (
        f"{{ {status_command}; }}; hpcfleet_rc=$?; printf '\\n%s\\n' {shlex.quote(MARK)}; "
        f"{listing_command}; exit $hpcfleet_rc"
    )


def split_listing(stdout: str) -> tuple[str, str | None]:
    """(the status command's output, the listing's output or None if it is missing). The
    FIRST marker splits: the status command's output comes first and holds no file
    names, so a hostile name in the listing cannot move the split."""
    head, found, tail = stdout.partition(f"\n{MARK}\n")
    return (head, tail) if found else (stdout, None)


def parse_checkpoints(output: str, watches: Sequence[CheckpointWatch]) -> CheckpointListing:
    """The checkpoints in a `checkpoints_command` answer. Bad entries are refused one by
    one (named in `refused`); a cut-short last entry is dropped."""
    fields = output.split("\0")
    listing = CheckpointListing()
    seen: set[tuple[int, str]] = set()
    for start in range(0, len(fields) - 4 + 1, 4):
        index_text, path, stat, digest = fields[start : start + 4]
        entry = _entry(index_text, path, stat, digest, watches)
        if isinstance(entry, str):
            listing.refused.append(entry)
        elif (entry.watch, entry.name) not in seen:
            seen.add((entry.watch, entry.name))
            listing.found.append(entry)
    return listing


def _entry(
    index_text: str, path: str, stat: str, digest: str, watches: Sequence[CheckpointWatch]
) -> FoundCheckpoint | str:
    """The entry, or why it is refused."""
    shown = repr(path[:200])
    if not index_text.isascii() or not index_text.isdigit() or int(index_text) >= len(watches):
        return f"{shown}: no such watch {index_text[:20]!r}"
    watch = watches[int(index_text)]
    parent, _, name = path.rpartition("/")
    if parent != watch.parent:
        return f"{shown}: not directly under {watch.parent or 'the outputs'!r}"
    if not _NAME.match(name) or not fnmatchcase(name, watch.pattern):
        return f"{shown}: not a checkpoint name matching {watch.pattern!r}"
    stat_match = _STAT.match(stat)
    if stat_match is None:
        return f"{shown}: bad size and mtime {stat[:60]!r}"
    if digest != NOT_HASHED and not _HEX.match(digest):
        return f"{shown}: bad sha256 {digest[:80]!r}"
    return FoundCheckpoint(
        watch=int(index_text),
        name=name,
        path=path,
        size=int(stat_match.group(1)),
        mtime=int(stat_match.group(2)),
        sha256=None if digest == NOT_HASHED else digest,
    )
