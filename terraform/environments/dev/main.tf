# Environments differ only in their variables (terraform.tfvars): this file is the same in each.
module "dify_batch_processor" {
  source = "../../modules/dify_batch_processor"

  project_id                          = var.project_id
  region                              = var.region
  name_prefix                         = var.name_prefix
  spreadsheet_id                      = var.spreadsheet_id
  sheet_name                          = var.sheet_name
  unique_id_column                    = var.unique_id_column
  row_filter_column                   = var.row_filter_column
  row_filter_value                    = var.row_filter_value
  google_sheets_credentials_secret_id = var.google_sheets_credentials_secret_id
  datastore_namespace                 = var.datastore_namespace
  dify_api_endpoint                   = var.dify_api_endpoint
  dify_api_key_secret_id              = var.dify_api_key_secret_id
  dify_api_timeout_minutes            = var.dify_api_timeout_minutes
  dify_response_mode                  = var.dify_response_mode
  timeout_margin_seconds              = var.timeout_margin_seconds
  max_attempts                        = var.max_attempts
  max_concurrent_dispatches           = var.max_concurrent_dispatches
  max_dispatches_per_second           = var.max_dispatches_per_second
  worker_concurrency                  = var.worker_concurrency
  worker_max_instances                = var.worker_max_instances
  worker_memory                       = var.worker_memory
  loader_timeout_seconds              = var.loader_timeout_seconds
  schedule                            = var.schedule
  time_zone                           = var.time_zone
  scheduler_paused                    = var.scheduler_paused
  create_firestore_database           = var.create_firestore_database
  firestore_location                  = var.firestore_location
  log_level                           = var.log_level
  labels                              = var.labels
  dify_user                           = var.dify_user
  dify_max_response_bytes             = var.dify_max_response_bytes
  sheet_chunk_rows                    = var.sheet_chunk_rows
  enqueue_concurrency                 = var.enqueue_concurrency
}
