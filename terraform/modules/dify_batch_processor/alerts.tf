# Alert policies: what needs a person, sent to var.notification_channels (none: the incidents
# still open in the console's Alerting page, but nobody is told). docs/operations.md ("Alerts")
# says what each one means and what to do; the same text travels with every notification.

# Log-based metrics counting the log lines the alerts watch (the worker's and the loader's JSON
# lines, shared/adapters/logs.py).
locals {
  log_signals = {
    # The worker paused a queue (batch_paused), or the loader found one paused (queue_paused, on
    # every run while it stays paused).
    queue_paused = {
      description = "A rows queue paused: the worker's batch_paused lines and the loader's queue_paused lines."
      filter      = "resource.type=\"cloud_run_revision\" AND ((resource.labels.service_name=\"${local.worker_name}\" AND jsonPayload.event=\"batch_paused\") OR (resource.labels.service_name=\"${local.loader_name}\" AND jsonPayload.event=\"queue_paused\"))"
    }
    # A loader run that queued rows again whose claim had expired: they sat in PROCESSING past
    # their lease (a worker stopped mid-row). re_enqueued.expired_lease is the number of rows.
    expired_leases = {
      description = "Loader runs that found rows PROCESSING past their lease and queued them again."
      filter      = "${local.run_resource.loader} AND jsonPayload.event=\"load_summary\" AND jsonPayload.re_enqueued.expired_lease>0"
    }
    # The worker's one ERROR line when the spend limit is reached.
    spend_limit = {
      description = "The worker's spend_limit_reached lines: the token budget is used up."
      filter      = "${local.run_resource.worker} AND jsonPayload.event=\"spend_limit_reached\""
    }
  }
}

resource "google_logging_metric" "signals" {
  for_each = local.log_signals

  project     = var.project_id
  name        = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  description = each.value.description
  filter      = each.value.filter

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
  }

  depends_on = [google_project_service.apis]
}

# A new log-based metric reaches Cloud Monitoring only after a while; until then a policy naming
# it is refused ("Cannot find metric(s) that match type ... could take up to 10 minutes"). The
# policies wait for this, which sleeps only when a metric is created (the triggers).
resource "time_sleep" "log_metrics_available" {
  create_duration = "120s"

  triggers = {
    metrics = join(",", sort(concat([google_logging_metric.row_outcomes.id], [for m in google_logging_metric.signals : m.id])))
  }
}

locals {
  alert_window_seconds = 3600

  # One threshold condition on a log-based metric each: the sum over the last hour above
  # `threshold`.
  log_alerts = {
    queue_paused = {
      title     = "a rows queue is paused"
      severity  = "ERROR"
      metric    = google_logging_metric.signals["queue_paused"].name
      labels    = ""
      threshold = 0
      doc       = <<-EOT
        A queue of ${var.name_prefix} is paused: no row of that workflow runs until it is resumed.
        The worker pauses the queue when Dify fails every row alike (a wrong or revoked API key,
        a used-up quota or spend limit, an app that no longer exists), rather than fail them all;
        the loader then reports the pause on every run. Rows are not charged for it.

        What to do: read the reason in the worker's ERROR line (event batch_paused: code and
        message) or in `dify-batch status`, fix it in Dify or in the key secret, then resume: call
        the loader with resume=true (`curl -X POST "LOADER_URL?resume=true"` with an identity
        token, as in the README's Operations), or `gcloud tasks queues resume`.
      EOT
    }
    failed_rows = {
      title     = "more than ${var.alert_failed_rows_per_hour} rows FAILED in an hour"
      severity  = "WARNING"
      metric    = google_logging_metric.row_outcomes.name
      labels    = " AND metric.labels.outcome=\"failed\""
      threshold = var.alert_failed_rows_per_hour
      doc       = <<-EOT
        More than ${var.alert_failed_rows_per_hour} rows of ${var.name_prefix} ended FAILED within
        an hour (alert_failed_rows_per_hour). A FAILED row is not run again by itself.

        What to do: `dify-batch status` lists the latest failures with their reasons (or the
        worker's WARNING lines, event row_outcome, outcome failed). A reason common to many rows
        (an input the workflow refuses, a workflow error, a timeout) is fixed in the sheet or in
        Dify; then run the loader with retry_failed=true to run those rows again.
      EOT
    }
    expired_leases = {
      title     = "rows were stuck in PROCESSING past their lease"
      severity  = "WARNING"
      metric    = google_logging_metric.signals["expired_leases"].name
      labels    = ""
      threshold = 0
      doc       = <<-EOT
        The loader found rows of ${var.name_prefix} still PROCESSING after their claim's lease
        had passed, and queued them again (re_enqueued.expired_lease in its load_summary line
        counts them). A worker stopped in the middle of those rows: an instance ran out of
        memory, crashed, or was stopped, or the outcome could not be written. Their Dify run may
        have been charged and will run once more.

        What to do: look for the worker's ERROR lines around that time (outcome_not_recorded,
        memory limit exceeded, a crash); the dashboard's worker memory chart shows memory
        pressure (raise worker_memory, or lower worker_concurrency or dify_max_response_bytes).
      EOT
    }
    spend_limit = {
      title     = "the spend limit is reached"
      severity  = "ERROR"
      metric    = google_logging_metric.signals["spend_limit"].name
      labels    = ""
      threshold = 0
      doc       = <<-EOT
        The rows of ${var.name_prefix} have used up their token budget (the worker's ERROR line,
        event spend_limit_reached, says how many tokens of how many). The batch is paused; rows
        already running finish, nothing else is charged.

        What to do: check in `dify-batch status` what was spent and what the rest would cost.
        To continue, raise the limit and apply, then resume the batch (call the loader with
        resume=true); otherwise leave it paused.
      EOT
    }
  }
}

# EVALUATION_MISSING_DATA_INACTIVE: no line logged in the window (no data) counts as no case, so
# the incident closes instead of staying open until auto_close.
resource "google_monitoring_alert_policy" "logs" {
  for_each = local.log_alerts

  project               = var.project_id
  display_name          = "${var.name_prefix}: ${each.value.title}"
  combiner              = "OR"
  severity              = each.value.severity
  notification_channels = var.notification_channels

  conditions {
    display_name = each.value.title
    condition_threshold {
      filter                  = "metric.type=\"logging.googleapis.com/user/${each.value.metric}\" AND resource.type=\"cloud_run_revision\"${each.value.labels}"
      comparison              = "COMPARISON_GT"
      threshold_value         = each.value.threshold
      duration                = "0s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"
      aggregations {
        alignment_period     = "${local.alert_window_seconds}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  # 7 days, the API's default, sent so the plan and the API agree.
  alert_strategy {
    auto_close = "604800s"
  }

  documentation {
    subject   = "${var.name_prefix}: ${each.value.title}"
    content   = each.value.doc
    mime_type = "text/markdown"
  }

  depends_on = [time_sleep.log_metrics_available]
}

# The loader failing run after run: at least alert_loader_failures error answers (5xx) within
# alert_loader_window_minutes, and not one success among its answers in that window (the ratio of
# errors to all answers is 1). Cloud Scheduler retries a failed run once, so one failed scheduled
# run gives up to two error answers. A loader that has failed from its first run on is caught too.
# No answer in the window (an idle schedule) counts as no case.
resource "google_monitoring_alert_policy" "loader_failing" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: the loader fails run after run"
  combiner              = "AND"
  severity              = "ERROR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "at least ${var.alert_loader_failures} error answers in ${var.alert_loader_window_minutes} minutes"
    condition_threshold {
      filter                  = "metric.type=\"run.googleapis.com/request_count\" AND ${local.run_resource.loader} AND metric.labels.response_code_class=\"5xx\""
      comparison              = "COMPARISON_GT"
      threshold_value         = var.alert_loader_failures - 0.5
      duration                = "0s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"
      aggregations {
        alignment_period     = "${var.alert_loader_window_minutes * 60}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  conditions {
    display_name = "no successful answer in ${var.alert_loader_window_minutes} minutes"
    condition_threshold {
      filter                  = "metric.type=\"run.googleapis.com/request_count\" AND ${local.run_resource.loader} AND metric.labels.response_code_class=\"5xx\""
      denominator_filter      = "metric.type=\"run.googleapis.com/request_count\" AND ${local.run_resource.loader}"
      comparison              = "COMPARISON_GT"
      threshold_value         = 0.999
      duration                = "0s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"
      aggregations {
        alignment_period     = "${var.alert_loader_window_minutes * 60}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "${var.alert_loader_window_minutes * 60}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  alert_strategy {
    auto_close = "604800s"
  }

  documentation {
    subject   = "${var.name_prefix}: the loader fails run after run"
    content   = <<-EOT
      The loader of ${var.name_prefix} answered an error at least ${var.alert_loader_failures}
      times within ${var.alert_loader_window_minutes} minutes, and not once with success: no new
      rows are queued, no lost task is found again, and no result is written back to the sheet.
      Rows already queued still run.

      What to do: read the loader's ERROR lines (event config_error, sheet_error,
      permanent_error, internal_error or transient_error, and load_summary with errors). Common
      causes: the sheet is no longer shared with the loader's account, a tab or header was
      renamed, a setting is invalid, or Datastore or the Sheets API refuses. Fix it, then run the
      loader once by hand (`gcloud scheduler jobs run`) and check that it answers 200.
    EOT
    mime_type = "text/markdown"
  }

  depends_on = [google_project_service.apis]
}
