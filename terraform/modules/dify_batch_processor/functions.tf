# Settings left empty are not sent at all (the `if v != ""` of each environment): the code reads
# an empty setting as unset anyway (env_ignore_empty), and an empty value the API drops on read
# would show a diff on every plan.
# Tasks and the scheduler call each function at its Cloud Run URL (service_config[0].uri), which
# is also the OIDC audience Cloud Run checks.
# The loader's timeout covers a whole run of a large sheet, up to Cloud Scheduler's 30-minute
# attempt deadline. Its ingress is a variable: ALLOW_ALL keeps the README's manual trigger
# working from a laptop; either way only holders of roles/run.invoker get in (iam.tf). Builds
# start only after the builder's grants have propagated (time_sleep in iam.tf).
resource "google_cloudfunctions2_function" "loader" {
  project     = var.project_id
  location    = var.region
  name        = local.loader_name
  description = "Reads the sheet, records new rows as PENDING and enqueues one task per row."
  labels      = local.labels

  build_config {
    runtime           = "python312"
    entry_point       = "load_sheet"
    service_account   = google_service_account.builder.id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.function["loader"].name
      }
    }
  }

  service_config {
    available_memory                 = "1Gi"
    available_cpu                    = "1"
    timeout_seconds                  = var.loader_timeout_seconds
    max_instance_count               = 2
    min_instance_count               = 0
    max_instance_request_concurrency = 1
    ingress_settings                 = var.loader_ingress
    service_account_email            = google_service_account.loader.email
    environment_variables = { for k, v in merge(local.common_env, {
      SPREADSHEET_ID                      = var.spreadsheet_id
      SHEET_NAME                          = var.sheet_name
      UNIQUE_ID_COLUMN                    = var.unique_id_column
      ROW_FILTER_COLUMN                   = var.row_filter_column
      ROW_FILTER_VALUE                    = var.row_filter_value
      GOOGLE_SHEETS_CREDENTIALS_SECRET_ID = var.google_sheets_credentials_secret_id
      SHEET_CHUNK_ROWS                    = tostring(var.sheet_chunk_rows)
      TASKS_LOCATION                      = var.region
      TASKS_QUEUE                         = google_cloud_tasks_queue.rows[local.default_workflow].name
      WORKER_URL                          = google_cloudfunctions2_function.worker.service_config[0].uri
      TASKS_SERVICE_ACCOUNT_EMAIL         = google_service_account.invoker.email
      ENQUEUE_CONCURRENCY                 = tostring(var.enqueue_concurrency)
      WRITE_BACK                          = tostring(var.write_back)
      RESULT_COLUMNS                      = var.result_columns
      RESULT_STATUS_COLUMN                = var.result_status_column
      RESULT_ERROR_COLUMN                 = var.result_error_column
      CHECK_INPUTS                        = tostring(var.check_inputs)
      DIFY_API_ENDPOINT                   = var.dify_api_endpoint
      DIFY_API_KEY_SECRET_ID              = var.dify_api_key_secret_id
    }, local.routing_env) : k => v if v != "" }
  }

  lifecycle {
    precondition {
      condition     = (var.row_filter_column == "") == (var.row_filter_value == "")
      error_message = "row_filter_column and row_filter_value go together: set both (e.g. target and TRUE) or neither. A filter on blank cells is not supported: mark the rows to run with a value instead."
    }
  }

  depends_on = [
    time_sleep.builder_grants_propagated,
    google_project_iam_member.loader_datastore,
    google_service_account_iam_member.loader_acts_as_invoker,
  ]
}

# The worker mostly waits on Dify, so one instance serves worker_concurrency requests: that needs
# at least one vCPU, and THREADS to match (functions-framework otherwise serves 4 per vCPU).
# Its timeout covers the tasks' dispatch deadline (locals.tf). Only the invoker account may call it.
resource "google_cloudfunctions2_function" "worker" {
  project     = var.project_id
  location    = var.region
  name        = local.worker_name
  description = "Claims one row, runs its Dify workflow, records SUCCESS or FAILED."
  labels      = local.labels

  build_config {
    runtime           = "python312"
    entry_point       = "process_row"
    service_account   = google_service_account.builder.id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.function["worker"].name
      }
    }
  }

  service_config {
    available_memory                 = var.worker_memory
    available_cpu                    = "1"
    timeout_seconds                  = local.worker_timeout_seconds
    max_instance_count               = var.worker_max_instances
    min_instance_count               = 0
    max_instance_request_concurrency = var.worker_concurrency
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    service_account_email            = google_service_account.worker.email
    environment_variables = { for k, v in merge(local.common_env, {
      DIFY_API_ENDPOINT       = var.dify_api_endpoint
      DIFY_API_KEY_SECRET_ID  = var.dify_api_key_secret_id
      DIFY_RESPONSE_MODE      = var.dify_response_mode
      DIFY_USER               = var.dify_user
      DIFY_MAX_RESPONSE_BYTES = tostring(var.dify_max_response_bytes)
      THREADS                 = tostring(var.worker_concurrency)
      TASKS_LOCATION          = var.region
      TASKS_QUEUE             = google_cloud_tasks_queue.rows[local.default_workflow].name
    }, local.routing_env) : k => v if v != "" }
  }

  lifecycle {
    precondition {
      condition     = local.dispatch_deadline_seconds >= 15 && local.dispatch_deadline_seconds <= 1800 && local.worker_timeout_seconds >= local.dispatch_deadline_seconds
      error_message = "The Dify timeout plus margin is the tasks' dispatch deadline, which Cloud Tasks accepts from 15 s to 30 minutes; the worker's timeout must cover it."
    }
    precondition {
      condition     = local.worker_max_concurrent_rows >= local.total_dispatches
      error_message = "worker_max_instances x worker_concurrency must be at least the queues' max_concurrent_dispatches added up, or tasks wait for a free worker."
    }
    precondition {
      condition     = length(var.workflows) > 0 || (var.dify_api_endpoint != "" && var.dify_api_key_secret_id != "")
      error_message = "Set dify_api_endpoint and dify_api_key_secret_id, or describe the workflows in workflows."
    }
    precondition {
      condition     = length(var.workflows) < 2 || var.workflow_column != ""
      error_message = "Several workflows need workflow_column: the header whose value picks a row's workflow."
    }
    precondition {
      condition     = var.default_workflow == "" || contains(keys(var.workflows), var.default_workflow)
      error_message = "default_workflow must name one of the workflows."
    }
    precondition {
      condition     = local.worker_memory_mib >= local.worker_memory_needed_mib
      error_message = "worker_memory is too small to parse worker_concurrency answers of up to dify_max_response_bytes at once (about 10x each answer, plus 256 MiB): raise worker_memory (at most 4Gi) or lower worker_concurrency or dify_max_response_bytes."
    }
  }

  depends_on = [time_sleep.builder_grants_propagated, google_project_iam_member.worker_datastore]
}
