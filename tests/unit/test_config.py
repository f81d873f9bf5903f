"""Settings: read on first use, errors that name the variable and never show a secret."""

import pytest

from shared.core.errors import ConfigError
from shared.entrypoints.config import LoaderSettings, WorkerSettings, load

WORKER = {
    "GOOGLE_CLOUD_PROJECT": "p",
    "DIFY_API_ENDPOINT": "https://api.dify.ai/v1/workflows/run",
    "DIFY_API_KEY": "app-secret-value",
}


def set_env(monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_defaults(monkeypatch):
    set_env(monkeypatch, WORKER)
    s = load(WorkerSettings)
    assert (s.dify_response_mode, s.dify_api_timeout_minutes, s.max_attempts) == (
        "streaming",
        10,
        5,
    )
    assert s.dispatch_deadline_seconds == 660
    assert s.lease_seconds == 660


def test_missing_variables_are_named(monkeypatch):
    with pytest.raises(ConfigError) as caught:
        load(WorkerSettings)
    assert "GOOGLE_CLOUD_PROJECT is not set" in caught.value.message
    assert ".env.example" in caught.value.message


def test_the_endpoint_is_needed_without_workflows(monkeypatch):
    set_env(monkeypatch, {"GOOGLE_CLOUD_PROJECT": "p", "DIFY_API_KEY": "app-secret-value"})
    with pytest.raises(ConfigError, match="DIFY_API_ENDPOINT is not set"):
        load(WorkerSettings)


def test_a_key_source_is_required(monkeypatch):
    set_env(monkeypatch, {**WORKER, "DIFY_API_KEY": ""})
    with pytest.raises(ConfigError, match="DIFY_API_KEY_SECRET_ID"):
        load(WorkerSettings)


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("DIFY_RESPONSE_MODE", "fast", "DIFY_RESPONSE_MODE is invalid (got 'fast')"),
        ("DIFY_API_TIMEOUT_MINUTES", "-1", "DIFY_API_TIMEOUT_MINUTES is invalid"),
        ("DIFY_API_TIMEOUT_MINUTES", "40", "Cloud Tasks allows 15 s to 1800 s"),
        ("MAX_ATTEMPTS", "zero", "MAX_ATTEMPTS is invalid"),
        ("DIFY_API_ENDPOINT", "api.dify.ai", "DIFY_API_ENDPOINT is invalid"),
    ],
)
def test_invalid_values_are_named(monkeypatch, name, value, needle):
    set_env(monkeypatch, {**WORKER, name: value})
    with pytest.raises(ConfigError) as caught:
        load(WorkerSettings)
    assert needle in caught.value.message


def test_fractional_minutes_are_allowed(monkeypatch):
    set_env(monkeypatch, {**WORKER, "DIFY_API_TIMEOUT_MINUTES": "2.5"})
    assert load(WorkerSettings).dify_timeout_seconds == 150


def test_dotenv_fills_in_but_never_overrides(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("DIFY_RESPONSE_MODE=streaming\nMAX_ATTEMPTS=9\n")
    set_env(monkeypatch, {**WORKER, "MAX_ATTEMPTS": "2"})
    s = load(WorkerSettings)
    assert (s.dify_response_mode, s.max_attempts) == ("streaming", 2)


def test_a_bad_secret_value_is_never_echoed(monkeypatch):
    set_env(monkeypatch, {**WORKER, "DIFY_API_ENDPOINT": "nope"})
    with pytest.raises(ConfigError) as caught:
        load(WorkerSettings)
    assert "app-secret-value" not in str(caught.value)


LOADER = {
    "GOOGLE_CLOUD_PROJECT": "p",
    "SPREADSHEET_ID": "s",
    "TASKS_LOCATION": "asia-northeast3",
    "TASKS_QUEUE": "q",
    "WORKER_URL": "https://w.run.app",
    "TASKS_SERVICE_ACCOUNT_EMAIL": "invoker@p.iam.gserviceaccount.com",
}


def test_the_row_filter_needs_both_halves(monkeypatch):
    set_env(monkeypatch, {**LOADER, "ROW_FILTER_COLUMN": "target"})
    with pytest.raises(ConfigError, match="ROW_FILTER_COLUMN and ROW_FILTER_VALUE"):
        load(LoaderSettings)


def test_the_loader_needs_an_invoker_account_for_real_cloud_tasks(monkeypatch):
    set_env(monkeypatch, {**LOADER, "TASKS_SERVICE_ACCOUNT_EMAIL": ""})
    with pytest.raises(ConfigError, match="TASKS_SERVICE_ACCOUNT_EMAIL"):
        load(LoaderSettings)
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", "127.0.0.1:1")
    assert load(LoaderSettings).queue_path == "projects/p/locations/asia-northeast3/queues/q"


@pytest.mark.parametrize(
    "key", ["app-sec\rret-0123", "app-sec ret-0123", "app-sec\tret-0123", "app-sécret-0123"]
)
def test_a_key_that_cannot_be_a_header_is_refused_by_name_never_by_value(monkeypatch, key):
    set_env(monkeypatch, {**WORKER, "DIFY_API_KEY": key})
    with pytest.raises(ConfigError) as caught:
        load(WorkerSettings)
    assert "DIFY_API_KEY holds" in caught.value.message
    assert "ret-0123" not in caught.value.message


def test_surrounding_whitespace_of_a_key_is_dropped(monkeypatch):
    set_env(monkeypatch, {**WORKER, "DIFY_API_KEY": "  app-secret-value\n"})
    assert load(WorkerSettings).dify_api_key.get_secret_value() == "app-secret-value"


def test_a_key_pasted_as_the_secret_id_is_refused_without_showing_it(monkeypatch):
    set_env(
        monkeypatch,
        {**WORKER, "DIFY_API_KEY": "", "DIFY_API_KEY_SECRET_ID": "app-Zk3PqL9xv2MnB7"},
    )
    with pytest.raises(ConfigError) as caught:
        load(WorkerSettings)
    assert "DIFY_API_KEY_SECRET_ID holds what looks like a Dify API key" in caught.value.message
    assert "Zk3PqL9xv2MnB7" not in caught.value.message


def test_the_workers_queue_settings_go_together(monkeypatch):
    set_env(monkeypatch, {**WORKER, "TASKS_QUEUE": "rows"})
    with pytest.raises(ConfigError, match="TASKS_LOCATION and TASKS_QUEUE go together"):
        load(WorkerSettings)
