"""Configuration of the CLI: `flows.settings`, where the dashboard reads it too."""

from __future__ import annotations

from flows.settings import Settings

__all__ = ["Settings"]
