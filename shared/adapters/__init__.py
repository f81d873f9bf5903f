"""Adapters: one small class per outside system, each with keyword-only constructor arguments.

What lives here: Datastore (`store`, the only place a row's state changes), Dify (`dify`),
Sheets read and write (`sheet`, `sheet_writer`), Cloud Tasks (`tasks`, `queue_control`), Secret
Manager (`secrets`) and structured logs for Cloud Logging (`logs`). An adapter may import
`shared.core` and the client libraries, never `shared.services` or `shared.entrypoints`. This
file imports nothing, so the worker loads only the clients it uses (the Sheets and Cloud Tasks
clients stay out of its cold start).
"""
