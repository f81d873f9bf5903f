"""The core: pure decisions on plain data, the project's rules with no I/O.

What lives here: the row model and its states (`model`), the one exception hierarchy that
separates transient from permanent failures (`errors`), how sheet rows are parsed and hashed
(`rows`), the loader's plan (`planning`), the claim rules (`claims`), how a Dify answer is
classified (`outcomes`), the input-form check (`form_check`), write-back planning
(`write_back`), routing to several workflows (`workflows`), batch progress (`progress`) and the
text helpers every layer uses (`text`, `redact`). It may import the standard library, pydantic
for parsing, and itself — never `shared.adapters`, `shared.services`, `shared.entrypoints`,
`local` or `tests` (checked by `make lint`, import-linter). Tests of it need no emulator.
"""
