"""The project's error tree. Every layer raises subclasses of `HpcfleetError`.

    HpcfleetError                 exit 1; `transient` says whether a retry can help
    ├── DocumentError             exit 2: bad file, field or value (names them)
    ├── NotFoundError             exit 2: unknown partner, site, run or milestone
    ├── AccessDenied              exit 3: refused by an access rule (registry.access)
    ├── StoreError                exit 1: the database could not be read or written
    └── (sites.errors.SiteError)  exit 4 when unreachable, else 1

The exit codes are the CLI contract of INTERFACE.md; the CLI maps errors to them and
never prints a traceback unless `--debug`.
"""

from __future__ import annotations


class HpcfleetError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code: int = 1
    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if transient is not None:
            self.transient = transient

    def __str__(self) -> str:
        return self.message


class DocumentError(HpcfleetError):
    """A document (file, field or value) is invalid. Nothing was stored."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        prefix = ": ".join(part for part in (source, field) if part)
        super().__init__(f"{prefix}: {message}" if prefix else message, transient=False)
        self.source = source
        self.field = field


class NotFoundError(HpcfleetError):
    """A named partner, site, run or milestone does not exist."""

    exit_code = 2


class AccessDenied(HpcfleetError):
    """An access rule refused the operation (see registry.access)."""

    exit_code = 3


class StoreError(HpcfleetError):
    """The database could not be read or written."""
