# The timeout chain: Dify call < task dispatch deadline (= claim lease) <= worker timeout.
# The functions read the same two settings and derive the same numbers (shared/entrypoints/config.py).
# common_env is what both functions read; the rest is per function (functions.tf).
locals {
  source_root = coalesce(var.source_root, abspath("${path.module}/../../.."))

  loader_name    = "${var.name_prefix}-loader"
  worker_name    = "${var.name_prefix}-worker"
  queue_name     = "${var.name_prefix}${var.queue_name_suffix}"
  scheduler_name = "${var.name_prefix}-loader"
  labels         = merge({ app = "dify-batch-processor" }, var.labels)

  dify_timeout_seconds       = var.dify_api_timeout_minutes * 60
  dispatch_deadline_seconds  = floor(local.dify_timeout_seconds + var.timeout_margin_seconds)
  worker_timeout_seconds     = min(3600, local.dispatch_deadline_seconds + 30)
  queue_max_attempts         = var.max_attempts + var.uncharged_deliveries
  worker_max_concurrent_rows = var.worker_max_instances * var.worker_concurrency
  # worker_memory in MiB ("512Mi", "1Gi"; its validation checks the form).
  worker_memory_mib = tonumber(regex("^[0-9]+", var.worker_memory)) * (endswith(var.worker_memory, "Gi") ? 1024 : 1)
  # Parsing a JSON answer takes several times its size in Python objects (about 10x for
  # text-heavy outputs, more for many small objects), plus ~256 MiB for the runtime.
  worker_memory_needed_mib = 256 + ceil(10 * var.dify_max_response_bytes * var.worker_concurrency / 1048576)

  # One queue per workflow (or the one queue of the single workflow, key "default").
  workflow_queues = length(var.workflows) == 0 ? {
    default = { queue = local.queue_name, cap = var.max_concurrent_dispatches, secret = var.dify_api_key_secret_id }
    } : {
    for name, w in var.workflows : name => {
      queue = "${local.queue_name}-${name}", cap = w.max_concurrent_dispatches, secret = w.api_key_secret_id
    }
  }
  default_workflow = length(var.workflows) == 0 ? "default" : (var.default_workflow != "" ? var.default_workflow : sort(keys(var.workflows))[0])
  default_queue    = local.workflow_queues[local.default_workflow].queue
  total_dispatches = sum([for q in values(local.workflow_queues) : q.cap])
  # The Dify key secrets the functions read, one grant each (iam.tf): the single workflow's
  # secret under its own grant while dify_api_key_secret_id names it and a workflow uses it,
  # the others keyed by their id.
  dify_secret_ids     = toset([for q in values(local.workflow_queues) : q.secret if q.secret != ""])
  single_secret_kept  = var.dify_api_key_secret_id != "" && contains(local.dify_secret_ids, var.dify_api_key_secret_id)
  workflow_secret_ids = setsubtract(local.dify_secret_ids, local.single_secret_kept ? [var.dify_api_key_secret_id] : [])
  workflows_env = length(var.workflows) == 0 ? "" : jsonencode({
    for name, w in var.workflows : name => {
      endpoint          = w.endpoint
      api_key_secret_id = w.api_key_secret_id
      queue             = local.workflow_queues[name].queue
      response_mode     = w.response_mode
      timeout_minutes   = w.timeout_minutes
      workflow_id       = w.workflow_id
      input_columns     = w.input_columns
      max_total_tokens  = w.max_total_tokens
    }
  })
  routing_env = {
    WORKFLOWS        = local.workflows_env
    WORKFLOW_COLUMN  = var.workflow_column
    DEFAULT_WORKFLOW = var.default_workflow
    INPUT_COLUMNS    = var.input_columns
  }

  common_env = {
    GOOGLE_CLOUD_PROJECT     = var.project_id
    DATASTORE_NAMESPACE      = var.datastore_namespace
    DIFY_API_TIMEOUT_MINUTES = tostring(var.dify_api_timeout_minutes)
    TIMEOUT_MARGIN_SECONDS   = tostring(var.timeout_margin_seconds)
    MAX_ATTEMPTS             = tostring(var.max_attempts)
    MAX_TOTAL_TOKENS         = tostring(var.max_total_tokens)
    LOG_LEVEL                = var.log_level
  }
}
