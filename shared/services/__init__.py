"""The service layer: the loader's and the worker's use cases, the steps in order.

What lives here: `loader_service` (read the sheet, diff it against Datastore, record and enqueue,
write results back) and `worker_service` (claim a row, run its workflow, record the outcome). A
service takes its adapters ready-made and may import `shared.core` and `shared.adapters`, never
`shared.entrypoints`; only `shared.entrypoints.wiring` knows how to build one.
"""
