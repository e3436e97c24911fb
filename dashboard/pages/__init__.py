"""One module per page, each with a `main()` that renders it; nothing runs at import."""
