# Same declarations as the module; optional ones default to null, which means "the module's
# default" (module variables with defaults are nullable = false).

variable "project_id" {
  type        = string
  description = "Google Cloud project id to deploy into."
}

variable "region" {
  type        = string
  description = "Region of the functions, the queue and the scheduler job (e.g. asia-northeast3 for Seoul)."
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name (functions, queue, job, accounts, bucket)."
  default     = null
}

variable "spreadsheet_id" {
  type        = string
  description = "Id of the Google Sheet (from its URL: docs.google.com/spreadsheets/d/<ID>/edit)."
}

variable "sheet_name" {
  type        = string
  description = "Tab of the sheet to read; spaces and apostrophes are fine."
  default     = null
}

variable "unique_id_column" {
  type        = string
  description = "Column holding each row's unique id: a 0-based index (\"0\" = column A), a header name, or ROW_NUMBER."
  default     = null
}

variable "row_filter_column" {
  type        = string
  description = "Optional header of a column marking rows to run (e.g. target); empty: every row."
  default     = null
}

variable "row_filter_value" {
  type        = string
  description = "Value of row_filter_column that marks a row to run (e.g. TRUE); compared ignoring case."
  default     = null
}

variable "google_sheets_credentials_secret_id" {
  type        = string
  description = "Optional Secret Manager secret holding a service-account key JSON for the Sheets API. Empty (recommended): the loader's own service account reads the sheet, which must be shared with it."
  default     = null
}

variable "datastore_namespace" {
  type        = string
  description = "Optional Datastore namespace keeping this sheet's rows apart from others in the same database."
  default     = null
}

variable "dify_api_endpoint" {
  type        = string
  description = "Full workflow-run URL, e.g. https://api.dify.ai/v1/workflows/run (not needed with workflows)."
  default     = null
}

variable "dify_api_key_secret_id" {
  type        = string
  description = "Secret Manager secret id holding the Dify app's API key (create it with gcloud first; its value never passes through Terraform). With workflows: keep it when moving from the single workflow, so that secret keeps its grant."
  default     = null
}

variable "dify_api_timeout_minutes" {
  type        = number
  description = "Upper bound of one Dify call in minutes (fractions allowed). With timeout_margin_seconds it must fit Cloud Tasks' 30-minute dispatch deadline."
  default     = null
}

variable "dify_response_mode" {
  type        = string
  description = "streaming (recommended) or blocking. Streaming frees Dify's concurrency slot when a call ends, can be stopped, and a lost stream's run is looked up instead of run twice; Dify Cloud cuts blocking calls off after 100 s."
  default     = null
}

variable "timeout_margin_seconds" {
  type        = number
  description = "Seconds added to the Dify timeout for the claim's lease and the tasks' dispatch deadline."
  default     = null
}

variable "max_attempts" {
  type        = number
  description = "Runs allowed per row (MAX_ATTEMPTS), counting retries after the row's own transient errors. Deliveries that find Dify full are not counted (see uncharged_deliveries)."
  default     = null
}

variable "max_total_tokens" {
  type        = number
  description = "Spend limit (MAX_TOTAL_TOKENS): tokens the sheet's finished rows may charge in all; reached, the batch pauses until it is raised and resumed. 0: no limit."
  default     = null
}

variable "uncharged_deliveries" {
  type        = number
  description = "Deliveries a task may use beyond max_attempts: those that find Dify at capacity (no run started, no attempt charged), duplicates and Datastore hiccups."
  default     = null
}

variable "max_concurrent_dispatches" {
  type        = number
  description = "Most rows run at once (the queue's max_concurrent_dispatches): how hard Dify is pushed."
  default     = null
}

variable "max_dispatches_per_second" {
  type        = number
  description = "Most new rows started per second (the queue's max_dispatches_per_second)."
  default     = null
}

variable "worker_concurrency" {
  type        = number
  description = "Requests one worker instance serves at once (it mostly waits on Dify). Also sets functions-framework's THREADS."
  default     = null
}

variable "worker_max_instances" {
  type        = number
  description = "Most worker instances; with worker_concurrency it must cover max_concurrent_dispatches."
  default     = null
}

variable "worker_memory" {
  type        = string
  description = "Memory of a worker instance (answers up to DIFY_MAX_RESPONSE_BYTES are held in memory)."
  default     = null
}

variable "loader_timeout_seconds" {
  type        = number
  description = "Longest a loader run may take; the scheduler's attempt deadline is the same (Cloud Scheduler allows 30 minutes)."
  default     = null
}

variable "schedule" {
  type        = string
  description = "Cron schedule of the loader (Cloud Scheduler syntax)."
  default     = null
}

variable "time_zone" {
  type        = string
  description = "Time zone of the schedule (tz database name)."
  default     = null
}

variable "scheduler_paused" {
  type        = bool
  description = "Create the scheduler job paused (trigger the loader by hand until you are ready)."
  default     = null
}

variable "create_firestore_database" {
  type        = bool
  description = "Create the project's (default) Firestore database in Datastore mode. Most projects have one already."
  default     = null
}

variable "firestore_location" {
  type        = string
  description = "Location of the Firestore database when create_firestore_database is true (e.g. asia-northeast3, nam5)."
  default     = null
}

variable "log_level" {
  type        = string
  description = "Log level of both functions."
  default     = null
}

variable "labels" {
  type        = map(string)
  description = "Labels added to the functions and the bucket."
  default     = null
}

variable "dify_user" {
  type        = string
  description = "End-user id sent to Dify with every run (shows in Dify's logs)."
  default     = null
}

variable "dify_max_response_bytes" {
  type        = number
  description = "Kept Dify answers (the final event, a blocking answer) larger than this are refused unread: a row stores about 1 MiB at most."
  default     = null
}

variable "sheet_chunk_rows" {
  type        = number
  description = "Rows the loader reads per Sheets API call."
  default     = null
}

variable "enqueue_concurrency" {
  type        = number
  description = "CreateTask calls the loader makes at once."
  default     = null
}

variable "loader_ingress" {
  type        = string
  description = "Who may reach the loader's URL: ALLOW_ALL (manual curl trigger from anywhere, still only with run.invoker) or ALLOW_INTERNAL_ONLY."
  default     = null
}

variable "queue_name_suffix" {
  type        = string
  description = "Appended to the queue's name; change it after a destroy (a deleted queue's name is blocked for up to 3 days)."
  default     = null
}

variable "dispatch_log_sampling" {
  type        = number
  description = "Share of task attempts Cloud Tasks logs (0 to 1)."
  default     = null
}

variable "iam_propagation_seconds" {
  type        = number
  description = "Seconds the first apply waits after the builder's grants before building."
  default     = null
}

variable "write_back" {
  type        = bool
  description = "Write each row's outcome into the sheet (needs the sheet shared with the loader as Editor)."
  default     = null
}

variable "result_columns" {
  type        = string
  description = "Workflow output -> sheet header, e.g. answer->Answer; empty: one column per output."
  default     = null
}

variable "result_status_column" {
  type        = string
  description = "Header of the write-back's status column."
  default     = null
}

variable "result_error_column" {
  type        = string
  description = "Header of the write-back's error column."
  default     = null
}

variable "write_back_schedule" {
  type        = string
  description = "Optional schedule of a job that only writes results into the sheet."
  default     = null
}

variable "check_inputs" {
  type        = bool
  description = "Check rows against the workflow's input form before anything runs."
  default     = null
}

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
  description = "Several Dify workflows, name -> { endpoint, api_key_secret_id, max_concurrent_dispatches, response_mode?, timeout_minutes?, workflow_id?, input_columns?, max_total_tokens? }."
  default     = null
}

variable "workflow_column" {
  type        = string
  description = "With workflows: the header whose value names a row's workflow."
  default     = null
}

variable "default_workflow" {
  type        = string
  description = "With workflows: the workflow of rows whose workflow cell is empty."
  default     = null
}

variable "input_columns" {
  type        = string
  description = "Sheet headers mapped to workflow variable names, e.g. 질문->question."
  default     = null
}

variable "notification_channels" {
  type        = list(string)
  description = "Notification channels of the alert policies (projects/PROJECT/notificationChannels/ID); empty: incidents in the console only."
  default     = null
}

variable "alert_failed_rows_per_hour" {
  type        = number
  description = "Alert when more rows than this end FAILED within an hour."
  default     = null
}

variable "alert_loader_failures" {
  type        = number
  description = "Alert when the loader answers this many errors within alert_loader_window_minutes and not one success."
  default     = null
}

variable "alert_loader_window_minutes" {
  type        = number
  description = "The window of alert_loader_failures, in minutes."
  default     = null
}
