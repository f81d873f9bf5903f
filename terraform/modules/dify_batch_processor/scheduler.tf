# A failed run is repaired by the next one; one quick retry covers a cold start.
resource "google_cloud_scheduler_job" "loader" {
  project          = var.project_id
  region           = var.region
  name             = local.scheduler_name
  description      = "Runs the dify-batch-processor loader on a schedule."
  schedule         = var.schedule
  time_zone        = var.time_zone
  paused           = var.scheduler_paused
  attempt_deadline = "${var.loader_timeout_seconds}s"

  retry_config {
    retry_count          = 1
    min_backoff_duration = "30s"
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.loader.service_config[0].uri
    body        = base64encode("{}")
    headers = {
      "Content-Type" = "application/json"
    }
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.loader.service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_service_iam_member.loader_invoker]
}

# Optional: keeps the sheet fresh while rows run, without reading the sheet for new rows.
resource "google_cloud_scheduler_job" "write_back" {
  count = var.write_back && var.write_back_schedule != "" ? 1 : 0

  project          = var.project_id
  region           = var.region
  name             = "${local.scheduler_name}-write-back"
  description      = "Writes finished rows' outcomes into the sheet (loader option write_back_only)."
  schedule         = var.write_back_schedule
  time_zone        = var.time_zone
  paused           = var.scheduler_paused
  attempt_deadline = "${var.loader_timeout_seconds}s"

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.loader.service_config[0].uri
    body        = base64encode("{\"write_back_only\": true}")
    headers = {
      "Content-Type" = "application/json"
    }
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.loader.service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_service_iam_member.loader_invoker]
}
