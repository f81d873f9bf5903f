# rate_limits caps the rows running at once: how hard Dify is pushed. The worker marks a row
# FAILED itself at MAX_ATTEMPTS and answers 200. Deliveries that find Dify full (its concurrency
# limit, a 503) charge no attempt, so retry_config allows uncharged_deliveries more; a task that
# runs out of deliveries leaves its row PENDING, and the loader's next run enqueues it again.
# One queue per workflow, each with its own cap: each Dify app has its own concurrency limit.
resource "google_cloud_tasks_queue" "rows" {
  for_each = local.workflow_queues

  project  = var.project_id
  location = var.region
  name     = each.value.queue

  rate_limits {
    max_concurrent_dispatches = each.value.cap
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

# The single queue of earlier versions is the "default" workflow's: kept, not re-created.
moved {
  from = google_cloud_tasks_queue.rows
  to   = google_cloud_tasks_queue.rows["default"]
}

moved {
  from = google_cloud_tasks_queue_iam_member.loader_enqueuer
  to   = google_cloud_tasks_queue_iam_member.loader_enqueuer["default"]
}

moved {
  from = google_cloud_tasks_queue_iam_member.loader_viewer
  to   = google_cloud_tasks_queue_iam_member.loader_viewer["default"]
}

moved {
  from = google_cloud_tasks_queue_iam_member.worker_pauses
  to   = google_cloud_tasks_queue_iam_member.worker_pauses["default"]
}

moved {
  from = google_cloud_tasks_queue_iam_member.loader_resumes
  to   = google_cloud_tasks_queue_iam_member.loader_resumes["default"]
}

moved {
  from = google_secret_manager_secret_iam_member.worker_dify_key
  to   = google_secret_manager_secret_iam_member.worker_dify_key[0]
}
