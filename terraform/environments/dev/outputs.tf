output "loader_url" {
  description = "URL of the loader function."
  value       = module.dify_batch_processor.loader_url
}

output "worker_url" {
  description = "URL of the worker function."
  value       = module.dify_batch_processor.worker_url
}

output "queue" {
  description = "Full name of the Cloud Tasks queue."
  value       = module.dify_batch_processor.queue
}

output "scheduler_job" {
  description = "Name of the Cloud Scheduler job."
  value       = module.dify_batch_processor.scheduler_job
}

output "loader_service_account" {
  description = "Share the sheet with this account (Viewer)."
  value       = module.dify_batch_processor.loader_service_account
}

output "dashboard_url" {
  description = "Link to the monitoring dashboard."
  value       = module.dify_batch_processor.dashboard_url
}
