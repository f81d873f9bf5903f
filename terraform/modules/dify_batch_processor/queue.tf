# rate_limits caps the rows running at once: how hard Dify is pushed. The worker marks a row
# FAILED itself at MAX_ATTEMPTS and answers 200. Deliveries that find Dify full (its concurrency
# limit, a 503) charge no attempt, so retry_config allows uncharged_deliveries more; a task that
# runs out of deliveries leaves its row PENDING, and the loader's next run enqueues it again.
resource "google_cloud_tasks_queue" "rows" {
  project  = var.project_id
  location = var.region
  name     = local.queue_name

  rate_limits {
    max_concurrent_dispatches = var.max_concurrent_dispatches
    max_dispatches_per_second = var.max_dispatches_per_second
  }

  retry_config {
    max_attempts  = local.queue_max_attempts
    min_backoff   = "10s"
    max_backoff   = "600s"
    max_doublings = 4
  }

  stackdriver_logging_config {
    sampling_ratio = var.dispatch_log_sampling
  }

  depends_on = [google_project_service.apis]
}
