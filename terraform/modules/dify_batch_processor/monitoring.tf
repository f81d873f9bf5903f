# Rows by outcome, counted from the worker's one JSON log line per task outcome.
resource "google_logging_metric" "row_outcomes" {
  project     = var.project_id
  name        = "${var.name_prefix}-row-outcomes"
  description = "Worker task outcomes (succeeded, failed, retry, duplicate, missing, claim_lost)."
  filter      = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.worker_name}\" AND jsonPayload.event=\"row_outcome\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    labels {
      key         = "outcome"
      value_type  = "STRING"
      description = "What the worker did with the task."
    }
  }

  label_extractors = {
    outcome = "EXTRACT(jsonPayload.outcome)"
  }

  depends_on = [google_project_service.apis]
}

locals {
  run_resource = {
    loader = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.loader_name}\""
    worker = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.worker_name}\""
  }

  chart = {
    for key, spec in {
      loader_runs = {
        title    = "Loader runs per hour", metric = "run.googleapis.com/request_count",
        resource = local.run_resource.loader, period = "3600s", aligner = "ALIGN_SUM",
        reducer  = "REDUCE_SUM", group = ["metric.labels.response_code_class"], plot = "STACKED_BAR"
      }
      worker_runs = {
        title    = "Worker requests per hour", metric = "run.googleapis.com/request_count",
        resource = local.run_resource.worker, period = "3600s", aligner = "ALIGN_SUM",
        reducer  = "REDUCE_SUM", group = ["metric.labels.response_code_class"], plot = "STACKED_BAR"
      }
      loader_cpu = {
        title    = "Loader CPU utilization (p95)", metric = "run.googleapis.com/container/cpu/utilizations",
        resource = local.run_resource.loader, period = "300s", aligner = "ALIGN_PERCENTILE_95",
        reducer  = "REDUCE_MAX", group = [], plot = "LINE"
      }
      worker_cpu = {
        title    = "Worker CPU utilization (p95)", metric = "run.googleapis.com/container/cpu/utilizations",
        resource = local.run_resource.worker, period = "300s", aligner = "ALIGN_PERCENTILE_95",
        reducer  = "REDUCE_MAX", group = [], plot = "LINE"
      }
      loader_memory = {
        title    = "Loader memory utilization (p95)", metric = "run.googleapis.com/container/memory/utilizations",
        resource = local.run_resource.loader, period = "300s", aligner = "ALIGN_PERCENTILE_95",
        reducer  = "REDUCE_MAX", group = [], plot = "LINE"
      }
      worker_memory = {
        title    = "Worker memory utilization (p95)", metric = "run.googleapis.com/container/memory/utilizations",
        resource = local.run_resource.worker, period = "300s", aligner = "ALIGN_PERCENTILE_95",
        reducer  = "REDUCE_MAX", group = [], plot = "LINE"
      }
      worker_latency = {
        title    = "Worker request latency (p50)", metric = "run.googleapis.com/request_latencies",
        resource = local.run_resource.worker, period = "300s", aligner = "ALIGN_PERCENTILE_50",
        reducer  = "REDUCE_MEAN", group = [], plot = "LINE"
      }
      queue_depth = {
        title    = "Tasks waiting, per queue (workflow)", metric = "cloudtasks.googleapis.com/queue/depth",
        resource = "resource.type=\"cloud_tasks_queue\" AND resource.labels.queue_id=starts_with(\"${local.queue_name}\")",
        period   = "60s", aligner = "ALIGN_MAX", reducer = "REDUCE_SUM", group = ["resource.labels.queue_id"], plot = "LINE"
      }
      row_outcomes = {
        title    = "Rows by outcome per hour (worker logs)", metric = "logging.googleapis.com/user/${google_logging_metric.row_outcomes.name}",
        resource = local.run_resource.worker, period = "3600s", aligner = "ALIGN_SUM",
        reducer  = "REDUCE_SUM", group = ["metric.labels.outcome"], plot = "STACKED_BAR"
      }
      } : key => {
      title = spec.title
      xyChart = {
        dataSets = [{
          plotType = spec.plot
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "metric.type=\"${spec.metric}\" AND ${spec.resource}"
              # The Monitoring API drops empty fields; sending them would show a diff on every
              # plan, so groupByFields is left out when empty.
              aggregation = merge(
                {
                  alignmentPeriod    = spec.period
                  perSeriesAligner   = spec.aligner
                  crossSeriesReducer = spec.reducer
                },
                { for k, v in { groupByFields = spec.group } : k => v if length(v) > 0 },
              )
            }
          }
        }]
      }
    }
  }

  chart_order = [
    "loader_runs", "worker_runs", "row_outcomes", "queue_depth", "worker_latency",
    "worker_cpu", "worker_memory", "loader_cpu", "loader_memory",
  ]

  error_logs = {
    title = "ERROR logs of both functions"
    logsPanel = {
      filter        = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=(\"${local.loader_name}\" OR \"${local.worker_name}\") AND severity>=ERROR"
      resourceNames = ["projects/${var.project_id}"]
    }
  }

  dashboard = {
    displayName = "${var.name_prefix} — dify-batch-processor Monitoring Dashboard"
    mosaicLayout = {
      columns = 12
      tiles = concat(
        # Positions of 0 are left out: the API drops them (a diff on every plan otherwise).
        [for i, key in local.chart_order : merge(
          { width = 6, height = 4, widget = local.chart[key] },
          { for k, v in { xPos = (i % 2) * 6, yPos = floor(i / 2) * 4 } : k => v if v != 0 },
        )],
        [{ yPos = ceil(length(local.chart_order) / 2) * 4, width = 12, height = 6, widget = local.error_logs }],
      )
    }
  }
}

resource "google_monitoring_dashboard" "main" {
  project        = var.project_id
  dashboard_json = jsonencode(local.dashboard)
  depends_on     = [google_project_service.apis]
}
