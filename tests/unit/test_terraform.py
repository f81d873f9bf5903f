"""Properties of the Terraform, read from the HCL (python-hcl2): checked offline, since
`terraform validate` needs a provider download this machine cannot make."""

from __future__ import annotations

import json
import re
import zoneinfo
from pathlib import Path

import pytest

from shared.core.text import parse_arrows
from shared.entrypoints.config import MAX_DISPATCH_DEADLINE_S
from shared.services.worker_service import TaskResult
from tests.support.terraform import (
    ENVIRONMENTS,
    MODULE,
    ROOT,
    TERRAFORM,
    TerraformRefused,
    console,
    defaults,
    env_keys,
    evaluate,
    load,
    locals_,
    members,
    plan_after_apply,
    resources,
    unquote,
    variables,
)

# Settings in .env.example that only make sense on one machine.
LOCAL_ONLY = {
    "DATASTORE_EMULATOR_HOST",
    "SECRET_MANAGER_EMULATOR_HOST",
    "CLOUD_TASKS_EMULATOR_HOST",
    "SHEETS_API_ENDPOINT",
    "GOOGLE_SHEETS_CREDENTIALS_FILE",
    "DIFY_API_KEY",
    "LOCAL_MAX_CONCURRENT_DISPATCHES",
    "LOADER_URL",  # the operator's CLI
}


def functions():
    return resources("google_cloudfunctions2_function")


def service_config(name):
    return functions()[name]["service_config"][0]


def test_nothing_is_public():
    granted = members()
    assert len(granted) >= 8
    assert not [m for m in granted if "allUsers" in m or "allAuthenticatedUsers" in m]


def test_invokers_are_granted_on_the_cloud_run_services():
    grants = resources("google_cloud_run_service_iam_member")
    assert {(g["service"], g["role"], g["member"]) for g in grants.values()} == {
        (
            "${google_cloudfunctions2_function.worker.name}",
            '"roles/run.invoker"',
            "${google_service_account.invoker.member}",
        ),
        (
            "${google_cloudfunctions2_function.loader.name}",
            '"roles/run.invoker"',
            "${google_service_account.scheduler.member}",
        ),
    }
    assert resources("google_cloudfunctions2_function_iam_member") == {}


def test_every_function_has_its_own_service_account():
    accounts = {name: service_config(name)["service_account_email"] for name in functions()}
    assert accounts == {
        "loader": "${google_service_account.loader.email}",
        "worker": "${google_service_account.worker.email}",
    }
    assert {"loader", "worker", "invoker", "scheduler", "builder"} <= set(
        resources("google_service_account")
    )


def test_tasks_and_the_scheduler_call_the_cloud_run_urls_they_name_as_audience():
    run_uri = "${google_cloudfunctions2_function.%s.service_config[0].uri}"
    loader_env = service_config("loader")["environment_variables"]
    # The loader sends tasks to WORKER_URL with the same URL as the OIDC audience
    # (shared/adapters/tasks.py).
    assert "WORKER_URL = google_cloudfunctions2_function.worker.service_config[0].uri" in (
        loader_env
    )
    target = resources("google_cloud_scheduler_job")["loader"]["http_target"][0]
    assert target["uri"] == target["oidc_token"][0]["audience"] == run_uri % "loader"


def test_the_functions_are_built_by_their_own_builder_account():
    for name in ("loader", "worker"):
        build = functions()[name]["build_config"][0]
        assert build["service_account"] == "${google_service_account.builder.id}"
        assert unquote(build["runtime"]) == "python312"


def test_the_queue_concurrency_limit_is_the_variable():
    queue = resources("google_cloud_tasks_queue")["rows"]
    assert queue["rate_limits"][0]["max_concurrent_dispatches"] == "${each.value.cap}"
    assert "cap = var.max_concurrent_dispatches" in locals_()["workflow_queues"]
    assert queue["stackdriver_logging_config"][0]["sampling_ratio"] == (
        "${var.dispatch_log_sampling}"
    )
    assert 0 < variables()["dispatch_log_sampling"]["default"] < 1  # not every attempt
    assert variables()["max_concurrent_dispatches"]["default"] == 5


@pytest.mark.parametrize("minutes", [0.25, 10, 20, 28])
@pytest.mark.parametrize("margin", [10, 60, 120])
def test_the_timeout_chain_holds(minutes, margin):
    values = {
        **defaults(),
        "dify_api_timeout_minutes": minutes,
        "timeout_margin_seconds": margin,
        "local.worker_memory_mib": memory_mib(defaults()["worker_memory"]),
        "local.total_dispatches": defaults()["max_concurrent_dispatches"],
        "dify_api_endpoint": "https://api.dify.ai/v1/workflows/run",
        "dify_api_key_secret_id": "dify-api-key",
    }
    dispatch = evaluate(locals_()["dispatch_deadline_seconds"], values)
    worker = evaluate(service_config("worker")["timeout_seconds"], values)
    assert minutes * 60 < dispatch <= MAX_DISPATCH_DEADLINE_S
    assert dispatch <= worker <= 3600
    # The loader's tasks get exactly this deadline: the Python settings derive the same number.
    assert dispatch == int(minutes * 60 + margin)
    for pre in functions()["worker"]["lifecycle"][0]["precondition"]:
        assert evaluate(pre["condition"], values)


def test_the_loader_fits_a_whole_run_and_the_scheduler_waits_for_it():
    assert service_config("loader")["timeout_seconds"] == "${var.loader_timeout_seconds}"
    assert defaults()["loader_timeout_seconds"] == 1800
    job = resources("google_cloud_scheduler_job")["loader"]
    assert job["attempt_deadline"] == '"${var.loader_timeout_seconds}s"'
    assert job["time_zone"] == "${var.time_zone}"
    assert defaults()["time_zone"] == "Asia/Seoul"
    oidc = job["http_target"][0]["oidc_token"][0]
    assert oidc["service_account_email"] == "${google_service_account.scheduler.email}"


def test_the_queue_retries_at_least_as_often_as_the_worker_allows_attempts():
    queue = resources("google_cloud_tasks_queue")["rows"]
    for attempts in (1, 5, 100):
        values = {**defaults(), "max_attempts": attempts}
        assert evaluate(queue["retry_config"][0]["max_attempts"], values) >= attempts


def test_the_worker_serves_many_requests_per_instance_with_threads_to_match():
    config = service_config("worker")
    assert config["max_instance_request_concurrency"] == "${var.worker_concurrency}"
    assert unquote(config["available_cpu"]) == "1"
    assert "THREADS = tostring(var.worker_concurrency)" in config["environment_variables"]
    assert defaults()["worker_concurrency"] > 1


def test_secrets_are_referenced_by_id_never_as_values():
    text = "\n".join(p.read_text() for p in MODULE.glob("*.tf"))
    assert "google_secret_manager_secret_version" not in text  # would put values in state
    for name in functions():
        keys = env_keys(service_config(name)["environment_variables"])
        assert "DIFY_API_KEY" not in keys
        assert not [k for k in keys if "CREDENTIALS" in k and not k.endswith("_SECRET_ID")]
    accessors = resources("google_secret_manager_secret_iam_member")
    assert {a["member"] for a in accessors.values()} == {
        "${google_service_account.worker.member}",
        "${google_service_account.loader.member}",
    }


def test_every_deployed_setting_comes_from_terraform():
    example = (ROOT / ".env.example").read_text()
    settings = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    deployed = env_keys(service_config("loader")["environment_variables"]) | env_keys(
        service_config("worker")["environment_variables"]
    )
    assert settings - LOCAL_ONLY <= deployed, settings - LOCAL_ONLY - deployed


def test_sources_carry_main_shared_and_the_pinned_requirements():
    files = locals_()["function_files"]
    for name in ("loader", "worker"):
        text = json.dumps(files[name])
        assert f"/{name}/main.py" in text
        assert "requirements.txt" in text
        assert "local.shared_files" in text
    objects = resources("google_storage_bucket_object")["function"]
    assert "output_md5" in objects["name"]  # a code change gets a new object, and a redeploy


def test_names_that_must_be_globally_unique_carry_the_project():
    bucket = resources("google_storage_bucket")["sources"]
    assert "var.project_id" in bucket["name"]
    assert unquote(bucket["public_access_prevention"]) == "enforced"


def test_every_variable_has_a_type_and_a_description():
    for folder in [MODULE, *sorted(ENVIRONMENTS.iterdir())]:
        for name, body in variables(folder).items():
            assert body.get("type"), f"{folder.name}: variable {name} has no type"
            assert unquote(body.get("description", "")), f"{folder.name}: {name} undescribed"


def test_environments_differ_only_in_their_variables():
    envs = sorted(p for p in ENVIRONMENTS.iterdir() if p.is_dir())
    assert len(envs) >= 2
    first = {p.name: p.read_text() for p in envs[0].glob("*.tf")}
    for env in envs[1:]:
        assert {p.name: p.read_text() for p in env.glob("*.tf")} == first
        assert (env / "terraform.tfvars.example").exists()


def test_environments_pass_every_module_variable():
    module_vars = set(variables()) - {"source_root"}
    for env in sorted(p for p in ENVIRONMENTS.iterdir() if p.is_dir()):
        block = load(env)["module"][0]
        passed = {k for body in block.values() for k in body if not k.startswith("__")}
        assert module_vars <= passed, module_vars - passed


def test_the_original_notes_variables_are_in_the_example_tfvars():
    notes = [
        "spreadsheet_id",
        "sheet_name",
        "unique_id_column",
        "dify_api_endpoint",
        "dify_api_key_secret_id",
        "dify_api_timeout_minutes",
        "google_sheets_credentials_secret_id",
        "project_id",
        "region",
    ]
    text = (ENVIRONMENTS / "dev" / "terraform.tfvars.example").read_text()
    for name in notes:
        assert re.search(rf"^{name}\s*=", text, flags=re.M), name


def test_the_dashboard_has_every_panel_the_notes_ask_for():
    text = Path(MODULE / "monitoring.tf").read_text()
    for needle in [
        "run.googleapis.com/request_count",
        "container/cpu/utilizations",
        "container/memory/utilizations",
        "ALIGN_PERCENTILE_50",
        "cloudtasks.googleapis.com/queue/depth",
        "severity>=ERROR",
        "logging.googleapis.com/user/",
        "dify-batch-processor Monitoring Dashboard",
    ]:
        assert needle in text, needle
    metric = resources("google_logging_metric")["row_outcomes"]
    assert 'jsonPayload.event=\\"row_outcome\\"' in metric["filter"]


def test_the_worker_may_pause_and_the_loader_may_resume_only_their_one_queue():
    roles = resources("google_project_iam_custom_role")
    assert [unquote(p) for p in roles["queue_pauser"]["permissions"]] == ["cloudtasks.queues.pause"]
    assert [unquote(p) for p in roles["queue_resumer"]["permissions"]] == [
        "cloudtasks.queues.resume"
    ]
    grants = resources("google_cloud_tasks_queue_iam_member")
    by_role = {g["role"]: g for g in grants.values()}
    pauser = by_role["${google_project_iam_custom_role.queue_pauser.id}"]
    resumer = by_role["${google_project_iam_custom_role.queue_resumer.id}"]
    assert pauser["member"] == "${google_service_account.worker.member}"
    assert resumer["member"] == "${google_service_account.loader.member}"
    for grant in (pauser, resumer):
        assert grant["for_each"] == "${google_cloud_tasks_queue.rows}"
        assert grant["name"] == "${each.value.name}"
    # Nothing broader: no project-wide Cloud Tasks role for either function.
    project_roles = {g["role"] for g in resources("google_project_iam_member").values()}
    assert not [r for r in project_roles if "cloudtasks" in r]


def test_the_worker_knows_its_queue_and_streams_by_default():
    keys = env_keys(service_config("worker")["environment_variables"])
    assert {"TASKS_LOCATION", "TASKS_QUEUE"} <= keys
    assert defaults()["dify_response_mode"] == "streaming"


def test_the_queue_leaves_room_for_uncharged_deliveries():
    queue = resources("google_cloud_tasks_queue")["rows"]
    values = defaults()
    allowed = evaluate(queue["retry_config"][0]["max_attempts"], values)
    assert allowed == values["max_attempts"] + values["uncharged_deliveries"]
    assert values["uncharged_deliveries"] >= 10


def test_a_dify_key_cannot_be_passed_as_the_secret_id():
    validations = variables()["dify_api_key_secret_id"]["validation"]
    conditions = [v["condition"] for v in validations]
    assert any("app-" in c for c in conditions)


def test_the_operators_ordered_queries_have_their_composite_indexes():
    [index] = resources("google_firestore_index").values()
    assert unquote(index["collection"]) == "dify_batch_process_status"
    assert unquote(index["api_scope"]) == "DATASTORE_MODE_API"
    assert {unquote(v) for v in index["for_each"].values()} == {
        "finished_at",  # latest failures
        "row_number",  # export of one status, by sheet row
        "attempts",  # rows retrying, most tried first
    }


# -- issue: a deployment that works on the first apply and stays quiet on the second ----------

REAL_REGIONS = [
    "asia-northeast3",
    "us-central1",
    "europe-west10",
    "europe-west12",
    "me-central2",
    "northamerica-northeast1",
    "southamerica-west1",
    "africa-south1",
    "australia-southeast2",
]


def validation_regex(variable: str) -> str:
    conditions = [v["condition"] for v in variables()[variable]["validation"]]
    [pattern] = [m for c in conditions for m in re.findall(r'regex\("((?:[^"\\]|\\.)*)"', c)]
    return pattern.encode().decode("unicode_escape")


@pytest.mark.parametrize("region", REAL_REGIONS)
def test_real_regions_pass_the_region_validation(region):
    assert re.search(validation_regex("region"), region)


@pytest.mark.parametrize("region", ["asia", "Asia-northeast3", "us-central", "us_central1", ""])
def test_malformed_regions_fail_it(region):
    assert not re.search(validation_regex("region"), region)


@pytest.mark.parametrize(
    ("memory", "ok"),
    [
        ("512Mi", True),
        ("1Gi", True),
        ("2048Mi", True),
        ("4Gi", True),
        ("4096Mi", True),
        ("256Mi", False),
        ("511Mi", False),
        ("4097Mi", False),
        ("8Gi", False),
        ("1G", False),
    ],
)
def test_worker_memory_is_what_cloud_run_allows_for_one_vcpu(memory, ok):
    memory_rules = [v["condition"] for v in variables()["worker_memory"]["validation"]]
    pattern = (
        [m for c in memory_rules for m in re.findall(r'regex\("((?:[^"\\]|\\.)*)"', c)][-1]
        .encode()
        .decode("unicode_escape")
    )
    assert bool(re.search(pattern, memory)) is ok


def memory_mib(text: str) -> int:
    return int(text[:-2]) * (1024 if text.endswith("Gi") else 1)


def worker_preconditions_hold(**changes):
    values = {**defaults(), "dify_api_endpoint": "https://x", "dify_api_key_secret_id": "k"}
    values.update(changes)
    values["local.worker_memory_mib"] = memory_mib(values["worker_memory"])
    values["local.total_dispatches"] = values["max_concurrent_dispatches"]
    return all(
        evaluate(p["condition"], values)
        for p in functions()["worker"]["lifecycle"][0]["precondition"]
    )


def test_the_defaults_leave_the_worker_memory_for_its_answers():
    assert worker_preconditions_hold()


def test_too_little_memory_for_concurrent_large_answers_is_refused():
    assert not worker_preconditions_hold(
        worker_memory="512Mi", worker_concurrency=50, dify_max_response_bytes=2 * 1024 * 1024
    )


def test_a_dispatch_deadline_under_15_seconds_is_refused():
    assert not worker_preconditions_hold(dify_api_timeout_minutes=0.05, timeout_margin_seconds=10)


@pytest.mark.parametrize(
    "name",
    [
        "timeout_margin_seconds",
        "sheet_chunk_rows",
        "enqueue_concurrency",
        "dify_max_response_bytes",
        "worker_concurrency",
        "max_attempts",
        "max_total_tokens",
    ],
)
def test_settings_the_code_parses_as_integers_must_be_whole_numbers(name):
    conditions = " ".join(v["condition"] for v in variables()[name]["validation"])
    assert f"floor(var.{name}) == var.{name}" in conditions


def test_the_row_filter_is_both_or_neither():
    [pre] = functions()["loader"]["lifecycle"][0]["precondition"]
    for column, value, ok in (("", "", True), ("target", "TRUE", True), ("target", "", False)):
        values = {"row_filter_column": column, "row_filter_value": value}
        text = pre["condition"].replace("==", " == ")
        assert evaluate(text, values) is ok


def test_the_worker_is_internal_only_and_the_loader_a_choice():
    assert unquote(service_config("worker")["ingress_settings"]) == "ALLOW_INTERNAL_ONLY"
    assert service_config("loader")["ingress_settings"] == "${var.loader_ingress}"


def test_builds_wait_for_the_builders_grants_to_propagate():
    sleep = resources("time_sleep")["builder_grants_propagated"]
    assert unquote(sleep["create_duration"]) == "${var.iam_propagation_seconds}s"
    assert defaults()["iam_propagation_seconds"] >= 60
    waited = set(sleep["depends_on"])
    builder_grants = {
        f"${{google_project_iam_member.{name}}}"
        for name, grant in resources("google_project_iam_member").items()
        if grant["member"] == "${google_service_account.builder.member}"
    }
    assert len(builder_grants) == 2
    assert builder_grants | {"${google_storage_bucket_iam_member.builder_reads_sources}"} <= waited
    # A re-created builder account (a new unique id) is waited for again.
    assert sleep["triggers"] == {"builder": "${google_service_account.builder.unique_id}"}
    for name in ("loader", "worker"):
        assert "${time_sleep.builder_grants_propagated}" in functions()[name]["depends_on"]


def test_the_builder_holds_only_what_a_build_of_two_functions_needs():
    in_project = {
        unquote(g["role"]): g
        for g in resources("google_project_iam_member").values()
        if g["member"] == "${google_service_account.builder.member}"
    }
    # Not cloudbuild.builds.builder: that one writes every repository and bucket of the project.
    assert set(in_project) == {"roles/logging.logWriter", "roles/storage.objectViewer"}
    [condition] = in_project["roles/storage.objectViewer"]["condition"]
    assert 'startsWith(\\"projects/_/buckets/gcf-v2-sources-\\")' in condition["expression"]
    assert "condition" not in in_project["roles/logging.logWriter"]
    [images] = resources("google_artifact_registry_repository_iam_member").values()
    assert images["repository"] == "${google_artifact_registry_repository.functions.name}"
    repo = resources("google_artifact_registry_repository")["functions"]
    assert {unquote(p["action"]) for p in repo["cleanup_policies"]} == {"KEEP", "DELETE"}
    for name in ("loader", "worker"):
        build = functions()[name]["build_config"][0]
        assert build["docker_repository"] == "${google_artifact_registry_repository.functions.id}"


def test_the_dashboard_sends_no_zero_or_empty_fields_and_names_its_deployment():
    text = (MODULE / "monitoring.tf").read_text()
    assert "if v != 0" in text  # xPos/yPos of 0 are left out
    assert "if length(v) > 0" in text  # an empty groupByFields is left out
    assert "${var.name_prefix}" in locals_()["dashboard"]["displayName"]


def test_the_provider_is_held_to_the_checked_major():
    text = (MODULE / "versions.tf").read_text()
    assert '">= 8.0, < 9.0"' in text
    assert ".terraform.lock.hcl" not in (ROOT / ".gitignore").read_text()


def test_the_queue_name_can_carry_a_suffix():
    assert unquote(locals_()["queue_name"]) == "${var.name_prefix}${var.queue_name_suffix}"


def test_write_back_is_configured_on_the_loader_with_an_optional_second_job():
    keys = env_keys(service_config("loader")["environment_variables"])
    assert {"WRITE_BACK", "RESULT_COLUMNS", "CHECK_INPUTS", "DIFY_API_KEY_SECRET_ID"} <= keys
    job = resources("google_cloud_scheduler_job")["write_back"]
    assert "var.write_back_schedule" in job["count"]
    assert defaults()["write_back"] is False
    grant = resources("google_secret_manager_secret_iam_member")["loader_workflow_keys"]
    assert "var.check_inputs" in grant["for_each"]


def test_one_queue_per_workflow_and_one_secret_grant_per_secret():
    queue = resources("google_cloud_tasks_queue")["rows"]
    assert queue["for_each"] == "${local.workflow_queues}"
    text = locals_()["workflow_queues"]
    assert "for name, w in var.workflows" in text
    assert "cap = w.max_concurrent_dispatches" in text
    grants = resources("google_secret_manager_secret_iam_member")
    assert grants["worker_workflow_keys"]["for_each"] == "${local.workflow_secret_ids}"
    assert grants["worker_workflow_keys"]["member"] == "${google_service_account.worker.member}"
    assert "local.workflow_secret_ids" in grants["loader_workflow_keys"]["for_each"]
    # The single workflow's secret keeps its own grant while a workflow uses it.
    assert "local.single_secret_kept" in grants["worker_dify_key"]["count"]
    for function in ("loader", "worker"):
        env = service_config(function)["environment_variables"]
        assert "local.routing_env" in env
    assert {"WORKFLOWS", "WORKFLOW_COLUMN", "DEFAULT_WORKFLOW", "INPUT_COLUMNS"} <= set(
        locals_()["routing_env"]
    )


def test_the_old_single_queue_is_moved_not_recreated():
    text = (MODULE / "queue.tf").read_text()
    assert 'to   = google_cloud_tasks_queue.rows["default"]' in text


def test_the_dashboard_shows_each_queue():
    chart = locals_()["chart"]
    assert "resource.labels.queue_id" in json.dumps(chart)


# -- issue #21: upgrades that keep their grants, plans that stay quiet, alerts ---------------------

needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="the terraform binary is not here")

SINGLE = {
    "dify_api_endpoint": "https://api.dify.ai/v1/workflows/run",
    "dify_api_key_secret_id": "dify-api-key",
}


def workflow(secret: str, cap: int = 3) -> dict[str, object]:
    return {
        "endpoint": "https://api.dify.ai/v1/workflows/run",
        "api_key_secret_id": secret,
        "max_concurrent_dispatches": cap,
    }


def switch_stand_ins() -> str:
    """terraform_data stand-ins with the module's own for_each expressions for the secret grants
    and the queues (the google resources need a provider this machine cannot download)."""
    grants = resources("google_secret_manager_secret_iam_member")
    queue = resources("google_cloud_tasks_queue")["rows"]
    blocks = [
        (
            "worker_dify_key",
            "count",
            grants["worker_dify_key"]["count"],
            "var.dify_api_key_secret_id",
        ),
        (
            "loader_dify_key",
            "count",
            grants["loader_dify_key"]["count"],
            "var.dify_api_key_secret_id",
        ),
        (
            "worker_workflow_keys",
            "for_each",
            grants["worker_workflow_keys"]["for_each"],
            "each.value",
        ),
        (
            "loader_workflow_keys",
            "for_each",
            grants["loader_workflow_keys"]["for_each"],
            "each.value",
        ),
        ("rows", "for_each", queue["for_each"], "each.value.queue"),
    ]
    return "\n".join(
        f'resource "terraform_data" "{name}" {{\n  {meta} = {each[2:-1]}\n  input = {value}\n}}'
        for name, meta, each, value in blocks
    )


@needs_terraform
def test_moving_to_workflows_with_the_same_secret_leaves_its_grants_alone():
    after = {
        "workflows": {"main": workflow("dify-api-key"), "summary": workflow("summary-key")},
        "workflow_column": "kind",
        "default_workflow": "main",
        "dify_api_key_secret_id": "dify-api-key",  # kept, as the README's upgrade says
    }
    plan = plan_after_apply(switch_stand_ins(), SINGLE, after)
    kept = {"terraform_data.worker_dify_key[0]", "terraform_data.loader_dify_key[0]"}
    assert kept <= set(plan["no-op"])
    assert not [a for a in plan["delete"] if "key" in a]
    # Only the new workflow's secret gets new grants.
    assert [a for a in plan["create"] if "key" in a] == [
        'terraform_data.loader_workflow_keys["summary-key"]',
        'terraform_data.worker_workflow_keys["summary-key"]',
    ]
    # The queue is another name, so another queue: the README has the operator drain it first.
    assert plan["delete"] == ['terraform_data.rows["default"]']
    assert [a for a in plan["create"] if "rows" in a] == [
        'terraform_data.rows["main"]',
        'terraform_data.rows["summary"]',
    ]


@needs_terraform
def test_dropping_the_single_secret_id_in_the_switch_would_move_the_grant():
    # Why the README says to keep dify_api_key_secret_id: without it the same binding changes
    # address, and an unordered destroy could strip the worker's access.
    after = {"workflows": {"main": workflow("dify-api-key")}}
    plan = plan_after_apply(switch_stand_ins(), SINGLE, after)
    assert "terraform_data.worker_dify_key[0]" in plan["delete"]
    assert 'terraform_data.worker_workflow_keys["dify-api-key"]' in plan["create"]


@needs_terraform
def test_a_second_workflow_adds_only_its_own_grant():
    before = {"workflows": {"main": workflow("dify-api-key")}}
    after = {
        "workflows": {"main": workflow("dify-api-key"), "summary": workflow("summary-key")},
        "workflow_column": "workflow",
    }
    plan = plan_after_apply(switch_stand_ins(), before, after)
    assert "delete" not in plan
    assert plan["create"] == [
        'terraform_data.loader_workflow_keys["summary-key"]',
        'terraform_data.rows["summary"]',
        'terraform_data.worker_workflow_keys["summary-key"]',
    ]


@needs_terraform
@pytest.mark.parametrize(
    ("values", "single", "keyed"),
    [
        (SINGLE, True, []),
        (
            {"workflows": {"a": workflow("k"), "b": workflow("k")}, "workflow_column": "w"},
            False,
            ["k"],
        ),
        (
            {
                "workflows": {"a": workflow("k"), "b": workflow("x")},
                "workflow_column": "w",
                **SINGLE,
            },
            False,
            ["k", "x"],  # the single secret is no workflow's any more: its grant goes
        ),
        (
            {
                "workflows": {"a": workflow("dify-api-key"), "b": workflow("k")},
                "workflow_column": "w",
                **SINGLE,
            },
            True,
            ["k"],
        ),
    ],
)
def test_each_secret_is_granted_once(values, single, keyed):
    assert console("local.single_secret_kept", **values) is single
    assert console("local.workflow_secret_ids", **values) == keyed


def test_the_deployed_zips_are_never_deleted_by_age():
    bucket = resources("google_storage_bucket")["sources"]
    assert "lifecycle_rule" not in bucket
    # A code change gets a new object name, which replaces the object: the old zip goes then.
    assert "output_md5" in resources("google_storage_bucket_object")["function"]["name"]


def test_empty_settings_are_not_sent_to_the_functions():
    for name in ("loader", "worker"):
        env = service_config(name)["environment_variables"]
        assert env.startswith("${{for k, v in merge(local.common_env")
        assert env.endswith(': k => v if v != ""}}')


def test_custom_roles_and_project_grants_wait_for_the_apis():
    for kind in ("google_project_iam_custom_role", "google_project_iam_member"):
        for name, body in resources(kind).items():
            assert "${google_project_service.apis}" in body.get("depends_on", []), name
    apis = {unquote(a) for a in re.findall(r'"[a-z]+\.googleapis\.com"', locals_()["apis"])}
    assert "cloudresourcemanager.googleapis.com" in apis


def test_environments_require_the_modules_provider_major_and_declare_time():
    for env in sorted(p for p in ENVIRONMENTS.iterdir() if p.is_dir()):
        providers = load(env)["terraform"][0]["required_providers"][0]
        assert unquote(providers["google"]["version"]) == ">= 8.0, < 9.0"
        assert unquote(providers["time"]["source"]) == "hashicorp/time"


def test_the_single_workflows_settings_are_optional_in_the_environments():
    for env in sorted(p for p in ENVIRONMENTS.iterdir() if p.is_dir()):
        declared = variables(env)
        for name in ("dify_api_endpoint", "dify_api_key_secret_id"):
            assert "default" in declared[name], name
            assert declared[name]["default"] is None, name


@needs_terraform
def test_workflows_need_no_single_endpoint_or_secret():
    values = {"workflows": {"main": workflow("k")}}
    assert console("var.dify_api_endpoint", **values) == ""
    assert console("local.workflow_queues", **values)["main"]["secret"] == "k"


# Validations no stricter than what the app and the API accept.


def all_patterns(variable: str) -> list[str]:
    conditions = [v["condition"] for v in variables()[variable]["validation"]]
    found = [m for c in conditions for m in re.findall(r'regex\("((?:[^"\\]|\\.)*)"', c)]
    return [p.encode().decode("unicode_escape") for p in found]


def test_every_tz_database_name_passes_the_time_zone_validation():
    names = zoneinfo.available_timezones() | {"EST5EDT", "CST6CDT", "Etc/GMT+9", "UTC"}
    assert len(names) > 300  # the tz database is there to check against
    [pattern] = all_patterns("time_zone")
    assert [n for n in sorted(names) if not re.search(pattern, n)] == []


@pytest.mark.parametrize("zone", ["", "Asia Seoul", "/UTC", "Asia/", "9Asia/Seoul"])
def test_what_is_no_tz_name_fails_it(zone):
    [pattern] = all_patterns("time_zone")
    assert not re.search(pattern, zone)


@pytest.mark.parametrize(
    ("schedule", "ok"),
    [
        ("*/10 * * * *", True),
        ("*/10  * * * *", True),  # a double space, as cron reads it
        (" 0 9-18 * * 1-5 ", True),
        ("0\t9 * *\t1-5", True),
        ("* * * *", False),
        ("* * * * * *", False),
        ("", False),
    ],
)
def test_the_schedule_needs_five_fields_however_spaced(schedule, ok):
    [pattern] = all_patterns("schedule")
    assert bool(re.search(pattern, schedule)) is ok


RESULT_COLUMNS = [
    "",
    "answer->Answer",
    "answer->Answer, score->점수",
    "answer->Answer,",  # a trailing comma
    ", answer->Answer,,",
    "my-key->My Header",  # hyphenated keys
    "a-b-c->x-y",
    "x-->y",
    "--->y",
    "-x->y",
    "a->b->c",
    "a->->",
    "answer",
    "->Answer",
    "answer->",
    "answer->  ",
    " ->x",
    "->->b",
    "answer->Answer, score",
    "   ",
]


@pytest.mark.parametrize("text", RESULT_COLUMNS)
def test_result_columns_are_read_as_the_loader_reads_them(text):
    [pattern] = all_patterns("result_columns")
    passes = all(re.search(pattern, item) for item in text.split(","))
    assert passes is not isinstance(parse_arrows(text), str), text


@needs_terraform
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("time_zone", "EST5EDT"),
        ("schedule", "*/10  * * * *"),
        ("result_columns", "my-key->My Header, score->점수,"),
        ("notification_channels", ["projects/my-project-1/notificationChannels/123"]),
    ],
)
def test_terraform_itself_accepts_what_the_app_accepts(name, value):
    assert console(f"var.{name}", **{name: value}) == value


@needs_terraform
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("time_zone", "Asia Seoul"),
        ("schedule", "* * * *"),
        ("result_columns", "answer->Answer, score"),
        ("max_concurrent_dispatches", 2.5),
        ("notification_channels", ["1234567890"]),
        ("alert_loader_failures", 0),
        ("alert_failed_rows_per_hour", 1.5),
        ("alert_loader_window_minutes", 2000),
    ],
)
def test_terraform_refuses_what_the_app_or_the_api_would(name, value):
    with pytest.raises(TerraformRefused, match=f"{name} must"):
        console(f"var.{name}", **{name: value})


@pytest.mark.parametrize(
    "name",
    [
        "max_concurrent_dispatches",
        "worker_max_instances",
        "loader_timeout_seconds",
        "alert_failed_rows_per_hour",
        "alert_loader_failures",
        "alert_loader_window_minutes",
    ],
)
def test_counts_the_apis_take_as_integers_must_be_whole_numbers(name):
    conditions = " ".join(v["condition"] for v in variables()[name]["validation"])
    assert f"floor(var.{name}) == var.{name}" in conditions


# Alerts.


def log_metric_filters() -> dict[str, str]:
    metrics = resources("google_logging_metric")
    signals = {k: unquote(v["filter"]) for k, v in locals_()["log_signals"].items()}
    return {"row_outcomes": unquote(metrics["row_outcomes"]["filter"]), **signals}


def test_each_alert_watches_what_the_code_logs():
    filters = log_metric_filters()
    code = "\n".join(
        (ROOT / "shared/services" / f).read_text()
        for f in ("worker_service.py", "loader_service.py")
    )
    watched = {
        "queue_paused": ['"batch_paused"', '"queue_paused"'],
        "expired_leases": ['"load_summary"', "re_enqueued"],
        "row_outcomes": ['"row_outcome"'],
    }
    for metric, events in watched.items():
        for event in events:
            assert event.strip('"') in filters[metric], (metric, event)
            assert event in code, event
    # The loader counts rows whose lease passed under this reason (shared/core/planning.py).
    assert '"expired_lease"' in (ROOT / "shared/core/planning.py").read_text()
    assert "jsonPayload.re_enqueued.expired_lease>0" in filters["expired_leases"]
    # The spend limit's line comes with the spend limit (issue #20): one ERROR line of this event.
    assert 'jsonPayload.event=\\"spend_limit_reached\\"' in filters["spend_limit"]


def test_the_alert_policies_cover_what_needs_a_person():
    policies = resources("google_monitoring_alert_policy")
    assert set(policies) == {"logs", "loader_failing"}
    assert set(locals_()["log_alerts"]) == {
        "queue_paused",
        "failed_rows",
        "expired_leases",
        "spend_limit",
    }
    for policy in policies.values():
        assert policy["notification_channels"] == "${var.notification_channels}"
        assert policy["documentation"][0]["content"]
        # No line logged (no data) is no case: incidents close rather than wait for auto_close.
        for condition in policy["conditions"]:
            threshold = condition["condition_threshold"][0]
            assert (
                unquote(threshold["evaluation_missing_data"]) == "EVALUATION_MISSING_DATA_INACTIVE"
            )
    assert defaults()["notification_channels"] == []  # no channel: incidents in the console only


def test_failed_rows_alert_on_the_workers_failed_outcome_above_the_threshold():
    alert = locals_()["log_alerts"]["failed_rows"]
    assert TaskResult.FAILED.value == "failed"
    assert unquote(alert["labels"]) == ' AND metric.labels.outcome=\\"failed\\"'
    assert alert["threshold"] == "${var.alert_failed_rows_per_hour}"
    [condition] = resources("google_monitoring_alert_policy")["logs"]["conditions"]
    threshold = condition["condition_threshold"][0]
    assert unquote(threshold["comparison"]) == "COMPARISON_GT"
    assert threshold["aggregations"][0]["alignment_period"] == '"${local.alert_window_seconds}s"'
    assert unquote(locals_()["alert_window_seconds"]) == 3600
    assert 0 < defaults()["alert_failed_rows_per_hour"] <= 100


def test_the_loader_alert_needs_n_errors_and_no_success_in_its_window():
    policy = resources("google_monitoring_alert_policy")["loader_failing"]
    assert unquote(policy["combiner"]) == "AND"
    errors, only_errors = (c["condition_threshold"][0] for c in policy["conditions"])
    assert 'response_code_class=\\"5xx\\"' in errors["filter"]
    # Sums of whole answers: above N - 0.5 is at least N.
    for n in (1, 3, 10):
        assert evaluate(errors["threshold_value"], {"alert_loader_failures": n}) == n - 0.5
    assert "denominator_filter" in only_errors
    assert "5xx" not in only_errors["denominator_filter"]
    assert only_errors["threshold_value"] > 0.99
    windows = {
        agg["alignment_period"]
        for c in (errors, only_errors)
        for agg in c["aggregations"] + c.get("denominator_aggregations", [])
    }
    assert windows == {'"${var.alert_loader_window_minutes * 60}s"'}
    assert defaults()["alert_loader_failures"] == 3


def test_alert_policies_wait_for_new_log_metrics_to_reach_monitoring():
    sleep = resources("time_sleep")["log_metrics_available"]
    assert "google_logging_metric.signals" in sleep["triggers"]["metrics"]
    assert "google_logging_metric.row_outcomes" in sleep["triggers"]["metrics"]
    depends = resources("google_monitoring_alert_policy")["logs"]["depends_on"]
    assert depends == ["${time_sleep.log_metrics_available}"]


def test_the_spend_limit_reaches_both_functions_and_each_workflow():
    assert defaults()["max_total_tokens"] == 0
    assert locals_()["common_env"]["MAX_TOTAL_TOKENS"] == "${tostring(var.max_total_tokens)}"
    assert "max_total_tokens = w.max_total_tokens" in locals_()["workflows_env"]
    workflow_type = variables()["workflows"]["type"]
    assert "max_total_tokens" in json.dumps(workflow_type)
    conditions = " ".join(v["condition"] for v in variables()["workflows"]["validation"])
    assert "floor(w.max_total_tokens) == w.max_total_tokens" in conditions
