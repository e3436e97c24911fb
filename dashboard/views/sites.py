"""Sites: health from stored probes, and how fast each allocation burns.

Only references are shown (login, identity file path, environment variable names):
never key material, never environment values.
"""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from dashboard import cached, charts, text, ui
from dashboard.config import DashboardConfig
from dashboard.data.sites import SiteView
from dashboard.tables import health, probe_checks_table, sites_table
from flows.burn import BurnForecast


def main() -> None:
    cfg = ui.config()
    st.title("Sites")
    ui.sources_caption(cfg)
    ui.live(_render, cfg)


def _render(cfg: DashboardConfig) -> None:
    views = ui.from_store(lambda: cached.sites(cfg.store_url))
    if not views:
        st.info("No sites yet. Register one with `hpcfleet site add FILE`.")
        return
    st.dataframe(sites_table(views), hide_index=True)
    for view in views:
        _card(view)


def _card(view: SiteView) -> None:
    with st.container(border=True):
        st.subheader(f"{text.plain(view.name)} · {text.plain(view.owner_name)}")
        facts, burn = st.columns([2, 3])
        with facts:
            st.markdown(_facts(view))
            if view.probe is not None and view.probe.checks:
                with st.expander(f"Last probe: {text.when(view.probe.checked_at)}"):
                    st.dataframe(probe_checks_table(view.probe.checks), hide_index=True)
        with burn:
            if view.allocation is None:
                st.caption(f"No allocation registered; {text.gpu_hours(view.gpu_hours_total)} "
                           "GPU-hours used in all.")
            else:
                f = view.allocation.forecast
                st.plotly_chart(charts.burn_chart(view.allocation), key=f"burn_{view.name}")
                st.caption(_burn_caption(f))


def _facts(view: SiteView) -> str:
    """The site's references as markdown lines; every value it holds escaped."""
    plain, code = text.plain, text.code
    depth = view.probe.queue_depth if view.probe else None
    lines = [
        f"**Owner** {plain(view.owner_name)} ({code(view.owner)})",
        f"**Health** {health(view)}",
        f"**Queue depth** {'-' if depth is None else depth}",
        f"**Scheduler** {plain(view.scheduler)} — {plain(view.partitions)}",
        f"**Login** {code(view.login)}",
        f"**Host key** {view.host_key}",
    ]
    if view.description:
        lines.insert(0, f"_{plain(view.description)}_")
    if view.proxy_jump:
        lines.append(f"**Via** {' → '.join(code(h) for h in view.proxy_jump)}")
    if view.identity_file:
        lines.append(f"**Identity file** {code(view.identity_file)}")
    if view.modules:
        lines.append(f"**Modules** {', '.join(code(m) for m in view.modules)}")
    if view.env_names:
        lines.append(f"**Environment variables** {', '.join(code(n) for n in view.env_names)}")
    if view.container_image:
        lines.append(f"**Container** {code(view.container_image)}")
    if view.storage:
        lines.append(f"**Object storage** {code(view.storage)}")
    shared = ", ".join("all partners" if p == "*" else plain(p) for p in view.shared_with)
    lines.append(f"**Shared with** {shared or 'the owner only'}")
    if view.labels:
        lines.append("**Labels** " + ", ".join(code(f"{k}: {v}") for k, v in view.labels.items()))
    return "  \n".join(lines)


def _burn_caption(f: BurnForecast) -> str:
    last_day = f.end - timedelta(days=1)  # the period ends at 24:00 of its last day
    period = f"{f.start:%Y-%m-%d} – {last_day:%Y-%m-%d}"
    used = (f"{text.gpu_hours(f.used)} of {text.gpu_hours(f.granted)} GPU-hours used "
            f"({f.used_share:.1%}), period {period}")
    if f.status == "not started":
        return f"{used}; the period has not started."
    if f.status == "ended":
        return f"{used}; the period has ended."
    outlook = {
        "over": "the grant runs out before the period ends",
        "under": "much of the grant would go unused",
        "on pace": "on pace",
    }[f.status]
    runs_out = f" (around {f.runs_out:%Y-%m-%d})" if f.status == "over" and f.runs_out else ""
    return (f"{used}. At the last {f.window_days:.0f} days' rate of "
            f"{text.gpu_hours(f.rate_per_day)} GPU-h/day: {text.gpu_hours(f.projected)} "
            f"by the end — {outlook}{runs_out}.")
