output "loader_url" {
  description = "URL of the loader function (Cloud Scheduler calls it; trigger it by hand with an identity token)."
  value       = google_cloudfunctions2_function.loader.service_config[0].uri
}

output "worker_url" {
  description = "URL of the worker function (Cloud Tasks calls it)."
  value       = google_cloudfunctions2_function.worker.service_config[0].uri
}

output "queue" {
  description = "Full name of the Cloud Tasks queue (of the default workflow)."
  value       = google_cloud_tasks_queue.rows[local.default_workflow].id
}

output "queues" {
  description = "Each workflow's Cloud Tasks queue."
  value       = { for name, q in google_cloud_tasks_queue.rows : name => q.id }
}

output "scheduler_job" {
  description = "Name of the Cloud Scheduler job (gcloud scheduler jobs run NAME --location REGION)."
  value       = google_cloud_scheduler_job.loader.name
}

output "loader_service_account" {
  description = "Share the sheet with this account (Viewer) when no Sheets key secret is used."
  value       = google_service_account.loader.email
}

output "dashboard_url" {
  description = "Link to the monitoring dashboard."
  value       = "https://console.cloud.google.com/monitoring/dashboards/builder/${element(split("/", google_monitoring_dashboard.main.id), length(split("/", google_monitoring_dashboard.main.id)) - 1)}?project=${var.project_id}"
}
