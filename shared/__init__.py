"""Code shared by the loader and the worker; copied into each function's zip as `shared/`.

Grouped by role, lowest first: `core` (pure decisions), `adapters` (one per outside system),
`services` (the use cases), `entrypoints` (settings, wiring, HTTP). A layer imports only the
layers below it; `make lint` checks it (import-linter, contracts in pyproject.toml).
"""
