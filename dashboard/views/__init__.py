"""One module per page, each with a `main()` that renders it; nothing runs at import.
Pages are thin: data from `dashboard.cached` (over `dashboard.data`), tables from
`dashboard.tables`, figures from `dashboard.charts`, user text through `dashboard.text`.

Not named `pages/`: Streamlit treats a `pages/` folder beside the entry script as the
old folder-based multipage app and runs its files as scripts, bypassing `st.navigation`.
"""
