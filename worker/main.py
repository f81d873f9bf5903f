"""Cloud Function `process_row`: one Cloud Tasks delivery of {"id": "<row id>"}."""

import flask
import functions_framework

from shared.entrypoints.http import Answer, failure_answer, parse_task, worker_answer
from shared.entrypoints.wiring import worker_service


@functions_framework.http
def process_row(request: flask.Request) -> Answer:
    row_id = parse_task(request)
    if not isinstance(row_id, str):
        return row_id
    try:
        return worker_answer(worker_service().process_row(row_id))
    except Exception as exc:  # answered and logged as JSON, never a bare traceback
        return failure_answer(exc)
