"""The edge inside `shared/`: settings, wiring and the HTTP mapping the functions call.

What lives here: `config` (one typed Settings object read from the environment on first use),
`wiring` (builds every adapter and service once per instance, cached) and `http` (parses a
request and maps a service's outcome to an HTTP answer). It may import every layer below it.
The real edges — `loader/main.py`, `worker/main.py`, `cli/`, `local/` — import from here.
"""
