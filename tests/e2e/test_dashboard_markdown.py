"""No page turns what a partner typed into markdown or HTML.

Every free-text field the pages show (partner and site texts, labels, probe output,
milestones, run names and reasons, MLflow run names) holds `HOSTILE`: a remote-image
beacon, a fake "sign in again" link, script and image tags, a heading, a table, a
Streamlit directive, math and bare links. Each page is rendered with Streamlit's AppTest
and every piece of markdown it sends (bodies, titles, captions, alerts, labels) is parsed
as CommonMark: the hostile text must come out as the same text, never as a link, an
image, HTML, a heading or a table; plotly labels must not carry live HTML tags either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token
from streamlit.testing.v1 import AppTest

from tests.dashboard_sample import HOSTILE, HOSTILE_MARKER, fill_home, inject_hostile

pytestmark = pytest.mark.timeout(300)

RENDER_TIMEOUT = 60.0
PAGES = ("overview", "sites", "runs", "run_detail", "languages", "evaluations")
MARKDOWN_KINDS = ("title", "header", "subheader", "markdown", "caption", "info", "warning",
                  "error", "success")
LIVE_TOKENS = {"link_open", "image", "html_inline", "html_block", "table_open"}
# What GitHub-flavoured markdown and Streamlit would make live even where CommonMark does
# not: bare links, directives such as :red[...], and math.
LIVE_SOURCE = re.compile(r"https?://|www\.evil|:red\[|\$x\$")
# GFM (and Streamlit) also link bare URLs and e-mail addresses found in the text itself,
# after escapes are resolved.
AUTOLINK = re.compile(r"(?i)(https?://|www\.)|[-.\w+]+@[-\w]+\.")
INVISIBLE = "\u2060"  # a word joiner: how text.plain keeps a bare URL from matching
CODE_SPAN = re.compile(r"(?<![\\`])(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)  # not \`
LIVE_TAG = re.compile(r"<\s*(a|img|script)\b", re.IGNORECASE)
PARSER = MarkdownIt("commonmark").enable("table").enable("strikethrough")


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    path = tmp_path_factory.mktemp("hostile")
    fill_home(path)
    failed = inject_hostile(path)
    with pytest.MonkeyPatch.context() as env:
        for name in ("HPCFLEET_DATABASE_URL", "MLFLOW_TRACKING_URI", "MLFLOW_UI_URL",
                     "PREFECT_UI_URL", "PREFECT_API_URL", "HPCFLEET_DASHBOARD_REFRESH"):
            env.delenv(name, raising=False)
        env.setenv("HPCFLEET_HOME", str(path))
        yield path, failed


def render(view: str, **query: str) -> AppTest:
    at = AppTest.from_string(f"from dashboard.views import {view}\n{view}.main()\n",
                             default_timeout=RENDER_TIMEOUT)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown_sources(at: AppTest) -> list[str]:
    """Every string of the page that Streamlit renders as markdown."""
    sources = [str(e.value) for kind in MARKDOWN_KINDS for e in getattr(at, kind)]
    sources += [str(e.label) for e in at.expander]
    sources += [str(e.proto.label) for kind in ("page_link", "link_button") for e in at.get(kind)]
    sources += [str(e.proto.text) for e in at.get("progress")]
    sources += [str(e.label) for e in at.metric]
    for kind in ("selectbox", "multiselect", "number_input", "text_input"):
        sources += [str(e.label) for e in getattr(at, kind)]
    return sources


def inline_texts(tokens: list[Token]) -> Iterator[tuple[str, Token]]:
    """(the text a reader sees, the inline token) of every inline run of the document."""
    for token in tokens:
        if token.type == "inline" and token.children is not None:
            shown = "".join(c.content for c in token.children
                            if c.type in ("text", "code_inline"))
            yield shown, token


def live_parts(source: str) -> list[str]:
    """What of `source` a browser would get as more than text."""
    tokens = PARSER.parse(source)
    found = [t.type for t in tokens if t.type in LIVE_TOKENS]
    for _, inline in inline_texts(tokens):
        found += [c.type for c in inline.children or [] if c.type in LIVE_TOKENS]
        found += [m.group(0) for c in inline.children or [] if c.type == "text"
                  for m in AUTOLINK.finditer(c.content)]
    found += LIVE_SOURCE.findall(CODE_SPAN.sub("", source))
    return found


def one_line(text: str) -> str:
    return " ".join(text.replace(INVISIBLE, "").split())


def shown_as_text(source: str) -> bool:
    """The hostile string appears whole, as text or code, in one line of `source`."""
    return any(one_line(HOSTILE) in one_line(shown)
               for shown, _ in inline_texts(PARSER.parse(source)))


def figure_strings(at: AppTest) -> list[str]:
    def walk(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    return [s for chart in at.get("plotly_chart") for s in walk(json.loads(chart.proto.spec))]


def page_text(at: AppTest) -> str:
    """Everything else the page shows: tables, choices."""
    parts = [frame.value.to_string() for frame in at.dataframe]
    for kind in ("selectbox", "multiselect"):
        parts += [str(option) for e in getattr(at, kind) for option in e.options]
    return "\n".join(parts)


@pytest.mark.parametrize("view", PAGES)
def test_no_page_renders_hostile_text_as_markdown_or_html(
    hostile_home: tuple[Path, str], view: str
) -> None:
    _, failed = hostile_home
    at = render(view, run=failed) if view == "run_detail" else render(view)
    sources = markdown_sources(at)
    hostile = [s for s in sources if HOSTILE_MARKER in s.lower()]
    for source in sources:
        assert not live_parts(source), (view, live_parts(source), source)
    for source in hostile:
        assert shown_as_text(source), (view, source)
    tags = [s for s in figure_strings(at) if LIVE_TAG.search(s)]
    assert not tags, (view, tags)
    shown = "\n".join([*sources, page_text(at), *figure_strings(at)]).lower()
    assert HOSTILE_MARKER in shown, f"{view}: the hostile data never reached the page"


def test_pages_show_hostile_text_where_a_reader_expects_it(
    hostile_home: tuple[Path, str],
) -> None:
    """Escaping keeps the text: the milestone's title, the site's description and the
    failed run's name read as typed."""
    _, failed = hostile_home
    for view, query in (("overview", {}), ("sites", {}), ("run_detail", {"run": failed})):
        at = render(view, **query)
        assert any(shown_as_text(s) for s in markdown_sources(at)), view
