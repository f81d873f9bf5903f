# --- Where ---------------------------------------------------------------------------------

variable "project_id" {
  type        = string
  description = "Google Cloud project id to deploy into."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id (6-30 lowercase letters, digits or hyphens)."
  }
}

variable "region" {
  type        = string
  description = "Region of the functions, the queue and the scheduler job (e.g. asia-northeast3 for Seoul)."
  validation {
    condition     = can(regex("^[a-z]+(-[a-z]+)+[0-9]{1,2}$", var.region))
    error_message = "region must be a Google Cloud region such as asia-northeast3."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name (functions, queue, job, accounts, bucket)."
  default     = "dify-batch-processor"
  nullable    = false
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,21}$", var.name_prefix))
    error_message = "name_prefix must be 3-22 lowercase letters, digits or hyphens, starting with a letter (service account ids are limited to 30 characters)."
  }
}

variable "source_root" {
  type        = string
  description = "Path of the repository root holding loader/, worker/, shared/ and requirements.txt. Null: three levels above this module."
  default     = null
}

# --- The sheet ------------------------------------------------------------------------------

variable "spreadsheet_id" {
  type        = string
  description = "Id of the Google Sheet (from its URL: docs.google.com/spreadsheets/d/<ID>/edit)."
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{10,}$", var.spreadsheet_id))
    error_message = "spreadsheet_id must be the id from the sheet's URL (letters, digits, - and _)."
  }
}

variable "sheet_name" {
  type        = string
  description = "Tab of the sheet to read; spaces and apostrophes are fine."
  default     = "Sheet1"
  nullable    = false
  validation {
    condition     = length(trimspace(var.sheet_name)) > 0 && length(var.sheet_name) <= 100
    error_message = "sheet_name must be a tab name of 1-100 characters."
  }
}

variable "unique_id_column" {
  type        = string
  description = "Column holding each row's unique id: a 0-based index (\"0\" = column A), a header name, or ROW_NUMBER."
  default     = "0"
  nullable    = false
  validation {
    condition     = length(trimspace(var.unique_id_column)) > 0
    error_message = "unique_id_column must not be empty."
  }
}

variable "row_filter_column" {
  type        = string
  description = "Optional header of a column marking rows to run (e.g. target); empty: every row."
  default     = ""
  nullable    = false
}

variable "row_filter_value" {
  type        = string
  description = "Value of row_filter_column that marks a row to run (e.g. TRUE); compared ignoring case."
  default     = ""
  nullable    = false
}

variable "google_sheets_credentials_secret_id" {
  type        = string
  description = "Optional Secret Manager secret holding a service-account key JSON for the Sheets API. Empty (recommended): the loader's own service account reads the sheet, which must be shared with it."
  default     = ""
  nullable    = false
  validation {
    condition     = var.google_sheets_credentials_secret_id == "" || can(regex("^[A-Za-z0-9_-]{1,255}$", var.google_sheets_credentials_secret_id))
    error_message = "google_sheets_credentials_secret_id must be a secret id (letters, digits, - and _) or empty."
  }
}

variable "datastore_namespace" {
  type        = string
  description = "Optional Datastore namespace keeping this sheet's rows apart from others in the same database."
  default     = ""
  nullable    = false
  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{0,100}$", var.datastore_namespace))
    error_message = "datastore_namespace may hold letters, digits, '.', '_' and '-', up to 100 characters."
  }
}

# --- Dify -------------------------------------------------------------------------------------

variable "dify_api_endpoint" {
  type        = string
  description = "Full workflow-run URL, e.g. https://api.dify.ai/v1/workflows/run (empty with workflows)."
  default     = ""
  nullable    = false
  validation {
    condition     = var.dify_api_endpoint == "" || can(regex("^https?://[^\\s]+$", var.dify_api_endpoint))
    error_message = "dify_api_endpoint must be an http(s) URL such as https://api.dify.ai/v1/workflows/run."
  }
}

variable "dify_api_key_secret_id" {
  type        = string
  description = "Secret Manager secret id holding the Dify app's API key (create it with gcloud first; its value never passes through Terraform). With workflows it may be empty; when moving from the single workflow to workflows, keep it: the workflow that uses the same secret then keeps the grant it had (docs/operations.md, Upgrading from one workflow to several)."
  default     = ""
  nullable    = false
  validation {
    condition     = var.dify_api_key_secret_id == "" || can(regex("^[A-Za-z0-9_-]{1,255}$", var.dify_api_key_secret_id))
    error_message = "dify_api_key_secret_id must be a secret id: letters, digits, - and _."
  }
  # A Dify key pasted here would be stored in Terraform state and quoted in error messages.
  validation {
    condition     = !startswith(lower(var.dify_api_key_secret_id), "app-")
    error_message = "dify_api_key_secret_id looks like a Dify API key (app-...), not a secret id: store the key with `gcloud secrets create dify-api-key --data-file=-` and pass the secret's id."
  }
}

variable "dify_api_timeout_minutes" {
  type        = number
  description = "Upper bound of one Dify call in minutes (fractions allowed). With timeout_margin_seconds it must fit Cloud Tasks' 30-minute dispatch deadline."
  default     = 10
  nullable    = false
  validation {
    condition     = var.dify_api_timeout_minutes > 0 && var.dify_api_timeout_minutes <= 28
    error_message = "dify_api_timeout_minutes must be above 0 and at most 28 (Cloud Tasks allows a 30-minute dispatch deadline, which also holds the margin)."
  }
}

variable "dify_response_mode" {
  type        = string
  description = "streaming (recommended) or blocking. Streaming frees Dify's concurrency slot when a call ends, can be stopped, and a lost stream's run is looked up instead of run twice; Dify Cloud cuts blocking calls off after 100 s."
  default     = "streaming"
  nullable    = false
  validation {
    condition     = contains(["blocking", "streaming"], var.dify_response_mode)
    error_message = "dify_response_mode must be blocking or streaming."
  }
}

variable "timeout_margin_seconds" {
  type        = number
  description = "Seconds added to the Dify timeout for the claim's lease and the tasks' dispatch deadline."
  default     = 60
  nullable    = false
  validation {
    condition     = var.timeout_margin_seconds >= 10 && var.timeout_margin_seconds <= 120 && floor(var.timeout_margin_seconds) == var.timeout_margin_seconds
    error_message = "timeout_margin_seconds must be a whole number between 10 and 120."
  }
}

variable "max_attempts" {
  type        = number
  description = "Runs allowed per row (MAX_ATTEMPTS), counting retries after the row's own transient errors. Deliveries that find Dify full are not counted (see uncharged_deliveries)."
  default     = 5
  nullable    = false
  validation {
    condition     = var.max_attempts >= 1 && var.max_attempts <= 100 && floor(var.max_attempts) == var.max_attempts
    error_message = "max_attempts must be a whole number from 1 to 100."
  }
}

variable "max_total_tokens" {
  type        = number
  description = "Spend limit (MAX_TOTAL_TOKENS): tokens the sheet's finished rows may charge in all. Reached, the worker pauses the batch until the limit is raised and the batch resumed (dify-batch resume). 0: no limit."
  default     = 0
  nullable    = false
  validation {
    condition     = var.max_total_tokens >= 0 && floor(var.max_total_tokens) == var.max_total_tokens
    error_message = "max_total_tokens must be a whole number of at least 0 (0: no limit)."
  }
}

variable "uncharged_deliveries" {
  type        = number
  description = "Deliveries a task may use beyond max_attempts: those that find Dify at capacity (no run started, no attempt charged), duplicates and Datastore hiccups. With the queue's backoff (10 s doubling to 600 s), 20 cover about 3 hours of a full Dify."
  default     = 20
  nullable    = false
  validation {
    condition     = var.uncharged_deliveries >= 2 && var.uncharged_deliveries <= 100 && floor(var.uncharged_deliveries) == var.uncharged_deliveries
    error_message = "uncharged_deliveries must be a whole number from 2 to 100."
  }
}

# --- Throughput and cost ------------------------------------------------------------------

variable "max_concurrent_dispatches" {
  type        = number
  description = "Most rows run at once (the queue's max_concurrent_dispatches): how hard Dify is pushed."
  default     = 5
  nullable    = false
  validation {
    condition     = var.max_concurrent_dispatches >= 1 && var.max_concurrent_dispatches <= 5000 && floor(var.max_concurrent_dispatches) == var.max_concurrent_dispatches
    error_message = "max_concurrent_dispatches must be a whole number between 1 and 5000 (Cloud Tasks' limit)."
  }
}

variable "max_dispatches_per_second" {
  type        = number
  description = "Most new rows started per second (the queue's max_dispatches_per_second)."
  default     = 5
  nullable    = false
  validation {
    condition     = var.max_dispatches_per_second > 0 && var.max_dispatches_per_second <= 500
    error_message = "max_dispatches_per_second must be above 0 and at most 500 (Cloud Tasks' limit)."
  }
}

variable "worker_concurrency" {
  type        = number
  description = "Requests one worker instance serves at once (it mostly waits on Dify). Also sets functions-framework's THREADS."
  default     = 20
  nullable    = false
  validation {
    condition     = var.worker_concurrency >= 2 && var.worker_concurrency <= 1000 && floor(var.worker_concurrency) == var.worker_concurrency
    error_message = "worker_concurrency must be a whole number between 2 and 1000."
  }
}

variable "worker_max_instances" {
  type        = number
  description = "Most worker instances; with worker_concurrency it must cover max_concurrent_dispatches."
  default     = 5
  nullable    = false
  validation {
    condition     = var.worker_max_instances >= 1 && var.worker_max_instances <= 1000 && floor(var.worker_max_instances) == var.worker_max_instances
    error_message = "worker_max_instances must be a whole number between 1 and 1000."
  }
}

variable "worker_memory" {
  type        = string
  description = "Memory of a worker instance (answers up to DIFY_MAX_RESPONSE_BYTES are held in memory)."
  default     = "1Gi"
  nullable    = false
  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.worker_memory))
    error_message = "worker_memory must look like 512Mi or 1Gi."
  }
  # With its 1 vCPU Cloud Run allows 128 MiB to 4 GiB; below 512 MiB needs the first-generation
  # environment, which Cloud Functions (2nd gen) do not use. So: 512Mi to 4096Mi, or 1Gi to 4Gi.
  validation {
    condition     = can(regex("^(5(1[2-9]|[2-9][0-9])|[6-9][0-9]{2}|[1-3][0-9]{3}|40([0-8][0-9]|9[0-6]))Mi$|^[1-4]Gi$", var.worker_memory))
    error_message = "worker_memory must be between 512Mi and 4Gi (Cloud Run's range for 1 vCPU on the second-generation environment)."
  }
}

variable "loader_timeout_seconds" {
  type        = number
  description = "Longest a loader run may take; the scheduler's attempt deadline is the same (Cloud Scheduler allows 30 minutes)."
  default     = 1800
  nullable    = false
  validation {
    condition     = var.loader_timeout_seconds >= 60 && var.loader_timeout_seconds <= 1800 && floor(var.loader_timeout_seconds) == var.loader_timeout_seconds
    error_message = "loader_timeout_seconds must be a whole number between 60 and 1800 (Cloud Scheduler's HTTP attempt deadline is at most 30 minutes)."
  }
}

# --- Schedule -------------------------------------------------------------------------------

variable "schedule" {
  type        = string
  description = "Cron schedule of the loader (Cloud Scheduler's unix-cron syntax: five fields)."
  default     = "*/10 * * * *"
  nullable    = false
  # Five fields separated by any run of spaces or tabs, as cron reads them; Cloud Scheduler checks
  # the fields themselves.
  validation {
    condition     = can(regex("^\\s*\\S+(\\s+\\S+){4}\\s*$", var.schedule))
    error_message = "schedule must be a five-field cron expression such as */10 * * * *."
  }
}

variable "time_zone" {
  type        = string
  description = "Time zone of the schedule (tz database name)."
  default     = "Asia/Seoul"
  nullable    = false
  # The form of every tz database name (Asia/Seoul, UTC, EST5EDT, Etc/GMT+9,
  # America/Argentina/Buenos_Aires); Cloud Scheduler checks that the zone exists.
  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$", var.time_zone))
    error_message = "time_zone must be a tz database name such as Asia/Seoul, UTC or EST5EDT."
  }
}

variable "scheduler_paused" {
  type        = bool
  description = "Create the scheduler job paused (trigger the loader by hand until you are ready)."
  default     = false
  nullable    = false
}

# --- Database and logs ---------------------------------------------------------------------

variable "create_firestore_database" {
  type        = bool
  description = "Create the project's (default) Firestore database in Datastore mode. Most projects have one already."
  default     = false
  nullable    = false
}

variable "firestore_location" {
  type        = string
  description = "Location of the Firestore database when create_firestore_database is true (e.g. asia-northeast3, nam5)."
  default     = "asia-northeast3"
  nullable    = false
  validation {
    condition     = length(var.firestore_location) > 0
    error_message = "firestore_location must not be empty."
  }
}

variable "log_level" {
  type        = string
  description = "Log level of both functions."
  default     = "INFO"
  nullable    = false
  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to the functions and the bucket."
  default     = {}
  nullable    = false
}

# --- Fine tuning ------------------------------------------------------------------------------

variable "dify_user" {
  type        = string
  description = "End-user id sent to Dify with every run (shows in Dify's logs)."
  default     = "dify-batch-processor"
  nullable    = false
  validation {
    condition     = length(trimspace(var.dify_user)) > 0
    error_message = "dify_user must not be empty."
  }
}

variable "dify_max_response_bytes" {
  type        = number
  description = "Kept Dify answers (the final event, a blocking answer) larger than this are refused unread: a row stores about 1 MiB at most."
  default     = 2097152
  nullable    = false
  validation {
    condition     = var.dify_max_response_bytes >= 1024 && var.dify_max_response_bytes <= 268435456 && floor(var.dify_max_response_bytes) == var.dify_max_response_bytes
    error_message = "dify_max_response_bytes must be a whole number between 1 KiB and 256 MiB."
  }
}

variable "sheet_chunk_rows" {
  type        = number
  description = "Rows the loader reads per Sheets API call."
  default     = 1000
  nullable    = false
  validation {
    condition     = var.sheet_chunk_rows >= 10 && var.sheet_chunk_rows <= 50000 && floor(var.sheet_chunk_rows) == var.sheet_chunk_rows
    error_message = "sheet_chunk_rows must be a whole number between 10 and 50000."
  }
}

variable "enqueue_concurrency" {
  type        = number
  description = "CreateTask calls the loader makes at once."
  default     = 32
  nullable    = false
  validation {
    condition     = var.enqueue_concurrency >= 1 && var.enqueue_concurrency <= 256 && floor(var.enqueue_concurrency) == var.enqueue_concurrency
    error_message = "enqueue_concurrency must be a whole number between 1 and 256."
  }
}

# --- Exposure, names and logging --------------------------------------------------------------

variable "loader_ingress" {
  type        = string
  description = "Who may reach the loader's URL: ALLOW_ALL (the README's manual curl trigger works from anywhere; only callers with run.invoker get in) or ALLOW_INTERNAL_ONLY (Cloud Scheduler of this project only). The worker is always internal-only: only Cloud Tasks calls it."
  default     = "ALLOW_ALL"
  nullable    = false
  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY"], var.loader_ingress)
    error_message = "loader_ingress must be ALLOW_ALL or ALLOW_INTERNAL_ONLY."
  }
}

variable "queue_name_suffix" {
  type        = string
  description = "Appended to the queue's name (name_prefix + suffix). A deleted queue's name stays blocked for up to 3 days: after a destroy, apply again with another suffix (e.g. -2)."
  default     = ""
  nullable    = false
  validation {
    condition     = can(regex("^[A-Za-z0-9-]{0,20}$", var.queue_name_suffix))
    error_message = "queue_name_suffix must be up to 20 letters, digits or hyphens."
  }
}

variable "dispatch_log_sampling" {
  type        = number
  description = "Share of task attempts Cloud Tasks logs (0 to 1): every attempt logged costs money at 100,000 rows; the worker logs each outcome anyway."
  default     = 0.1
  nullable    = false
  validation {
    condition     = var.dispatch_log_sampling >= 0 && var.dispatch_log_sampling <= 1
    error_message = "dispatch_log_sampling must be between 0 and 1."
  }
}

variable "iam_propagation_seconds" {
  type        = number
  description = "How long the first apply waits after granting the builder its roles before the first build: IAM takes up to a couple of minutes to propagate, and a build that starts too early fails."
  default     = 120
  nullable    = false
  validation {
    condition     = var.iam_propagation_seconds >= 0 && var.iam_propagation_seconds <= 600 && floor(var.iam_propagation_seconds) == var.iam_propagation_seconds
    error_message = "iam_propagation_seconds must be a whole number from 0 to 600."
  }
}

# --- Results back in the sheet, and the input form check -------------------------------------

variable "write_back" {
  type        = bool
  description = "Write each row's outcome into result columns beside its inputs (WRITE_BACK). Needs the sheet shared with loader_service_account as Editor (not Viewer); the loader then asks for the spreadsheets scope instead of read-only."
  default     = false
  nullable    = false
}

variable "result_columns" {
  type        = string
  description = "Workflow output -> sheet header, e.g. \"answer->Answer, score->점수\" (RESULT_COLUMNS). Empty: every output key gets a column of its own name."
  default     = ""
  nullable    = false
  # The loader's own reading (parse_arrows in shared/core/text.py): items split at commas, blank
  # items skipped, each other item split at its first "->" into two parts that are not blank.
  # Hyphens in the names are fine (my-key->My Header). The first alternative is a blank item; the
  # second reads the part before the first "->" token by token so it cannot contain "->".
  validation {
    condition     = alltrue([for item in split(",", var.result_columns) : can(regex("^\\s*$|^\\s*(?:(?:[^-\\s]|-+[^->])(?:[^-]|-+[^->])*-*|-+)->.*\\S", item))])
    error_message = "result_columns must look like answer->Answer, score->Score: each item an output key, \"->\" and a sheet header."
  }
}

variable "result_status_column" {
  type        = string
  description = "Header of the column the write-back puts each row's status in."
  default     = "dify_status"
  nullable    = false
}

variable "result_error_column" {
  type        = string
  description = "Header of the column the write-back puts each failed row's reason in."
  default     = "dify_error"
  nullable    = false
}

variable "write_back_schedule" {
  type        = string
  description = "Optional second Cloud Scheduler job that only writes finished rows' outcomes into the sheet (loader option write_back_only), e.g. \"*/10 * * * *\". Empty: results are written by the main job only."
  default     = ""
  nullable    = false
}

variable "check_inputs" {
  type        = bool
  description = "Check every row against the workflow's input form (GET /v1/parameters) before anything runs (CHECK_INPUTS). The loader then reads the Dify key too."
  default     = true
  nullable    = false
}

# --- Several workflows from one sheet ---------------------------------------------------------

variable "workflows" {
  type = map(object({
    endpoint                  = string
    api_key_secret_id         = string
    max_concurrent_dispatches = number
    response_mode             = optional(string)
    timeout_minutes           = optional(number)
    workflow_id               = optional(string)
    input_columns             = optional(map(string), {})
    max_total_tokens          = optional(number, 0)
  }))
  description = "Several Dify workflows, name -> settings (max_total_tokens: that workflow's spend limit, 0: none); each gets its own queue (name_prefix-name) with its own max_concurrent_dispatches, and its own key secret. Empty: the single workflow of dify_api_endpoint / dify_api_key_secret_id / max_concurrent_dispatches."
  default     = {}
  nullable    = false
  validation {
    condition     = alltrue([for name in keys(var.workflows) : can(regex("^[a-z0-9-]{1,30}$", name))])
    error_message = "workflow names must be 1-30 lowercase letters, digits or hyphens (they name the queues)."
  }
  validation {
    condition     = alltrue([for w in values(var.workflows) : !startswith(lower(w.api_key_secret_id), "app-") && can(regex("^[A-Za-z0-9_-]{1,255}$", w.api_key_secret_id))])
    error_message = "each workflow's api_key_secret_id must be a secret id (not a Dify key: app-...)."
  }
  validation {
    condition     = alltrue([for w in values(var.workflows) : w.max_concurrent_dispatches >= 1 && w.max_concurrent_dispatches <= 5000 && floor(w.max_concurrent_dispatches) == w.max_concurrent_dispatches])
    error_message = "each workflow's max_concurrent_dispatches must be a whole number from 1 to 5000."
  }
  validation {
    condition     = alltrue([for w in values(var.workflows) : w.max_total_tokens >= 0 && floor(w.max_total_tokens) == w.max_total_tokens])
    error_message = "each workflow's max_total_tokens must be a whole number of at least 0 (0: no limit)."
  }
}

variable "workflow_column" {
  type        = string
  description = "With workflows: the header whose value names a row's workflow (WORKFLOW_COLUMN)."
  default     = ""
  nullable    = false
}

variable "default_workflow" {
  type        = string
  description = "With workflows: the workflow of rows whose workflow cell is empty (DEFAULT_WORKFLOW); empty: such rows are invalid."
  default     = ""
  nullable    = false
}

variable "input_columns" {
  type        = string
  description = "Sheet headers mapped to workflow variable names, e.g. \"질문->question, 학년->grade\" (INPUT_COLUMNS); a workflow's input_columns override it."
  default     = ""
  nullable    = false
}

# --- Alerts -------------------------------------------------------------------------------------

variable "notification_channels" {
  type        = list(string)
  description = "Notification channels the alert policies notify, as projects/PROJECT/notificationChannels/ID (create them in the console, Monitoring > Alerting > Edit notification channels, or with gcloud). Empty: the policies still open incidents in the console, but notify nobody."
  default     = []
  nullable    = false
  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "notification_channels must be channel names such as projects/my-project/notificationChannels/1234567890 (gcloud beta monitoring channels list shows them)."
  }
}

variable "alert_failed_rows_per_hour" {
  type        = number
  description = "Alert when more rows than this end FAILED within an hour."
  default     = 10
  nullable    = false
  validation {
    condition     = var.alert_failed_rows_per_hour >= 0 && var.alert_failed_rows_per_hour <= 1000000 && floor(var.alert_failed_rows_per_hour) == var.alert_failed_rows_per_hour
    error_message = "alert_failed_rows_per_hour must be a whole number from 0 (any FAILED row) to 1000000."
  }
}

variable "alert_loader_failures" {
  type        = number
  description = "Alert when the loader answers this many errors within alert_loader_window_minutes and not one success (Cloud Scheduler retries a failed run once, so a failed scheduled run counts up to twice)."
  default     = 3
  nullable    = false
  validation {
    condition     = var.alert_loader_failures >= 1 && var.alert_loader_failures <= 100 && floor(var.alert_loader_failures) == var.alert_loader_failures
    error_message = "alert_loader_failures must be a whole number from 1 to 100."
  }
}

variable "alert_loader_window_minutes" {
  type        = number
  description = "The window of alert_loader_failures, in minutes: longer than the schedule's interval times the failures it should cover (e.g. 60 for 3 runs every 10 minutes)."
  default     = 60
  nullable    = false
  validation {
    condition     = var.alert_loader_window_minutes >= 5 && var.alert_loader_window_minutes <= 1380 && floor(var.alert_loader_window_minutes) == var.alert_loader_window_minutes
    error_message = "alert_loader_window_minutes must be a whole number from 5 to 1380 (23 hours, within what Cloud Monitoring allows an alert's window)."
  }
}
