"""One module per page, each with a `main()` that renders it; nothing runs at import.

Not named `pages/`: Streamlit treats a `pages/` folder beside the entry script as the
old folder-based multipage app and runs its files as scripts, bypassing `st.navigation`.
"""
