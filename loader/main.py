"""Cloud Function `load_sheet`: called by Cloud Scheduler; enqueues the rows to process."""

import flask
import functions_framework

from shared.entrypoints.http import Answer, failure_answer, loader_answer, parse_load_options
from shared.entrypoints.wiring import loader_service


@functions_framework.http
def load_sheet(request: flask.Request) -> Answer:
    options = parse_load_options(request)
    if isinstance(options, tuple):  # a 400 answer saying what is wrong
        return options
    try:
        return loader_answer(loader_service().load(options))
    except Exception as exc:  # answered and logged as JSON, never a bare traceback
        return failure_answer(exc)
