"""The dashboard's pages in menu order. `st.Page` objects are built on demand (inside a
running app): app.py hands them to `st.navigation`, pages use them for links.

Page modules are named, not imported, here, so that they can link to each other.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import streamlit as st


@dataclass(frozen=True)
class PageEntry:
    url_path: str
    title: str
    icon: str
    module: str  # under dashboard.views; renders with its main()


PAGES = (
    PageEntry("overview", "Overview", ":material/flag:", "overview"),
    PageEntry("sites", "Sites", ":material/dns:", "sites"),
    PageEntry("runs", "Runs", ":material/list:", "runs"),
    PageEntry("run", "Run detail", ":material/search:", "run_detail"),
    PageEntry("languages", "Languages", ":material/translate:", "languages"),
    PageEntry("evaluations", "Evaluations", ":material/grid_on:", "evaluations"),
)


def page(url_path: str) -> st.Page:
    entry = next(p for p in PAGES if p.url_path == url_path)
    module = importlib.import_module(f"dashboard.views.{entry.module}")
    return st.Page(module.main, title=entry.title, icon=entry.icon, url_path=entry.url_path,
                   default=entry is PAGES[0])


def all_pages() -> list[st.Page]:
    return [page(entry.url_path) for entry in PAGES]
