# One service account per job, each with only the roles it needs. Nothing is granted to
# allUsers or allAuthenticatedUsers: both functions are called with OIDC tokens only.

resource "google_service_account" "loader" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-ld"
  display_name = "dify-batch-processor loader (reads the sheet, enqueues rows)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-wk"
  display_name = "dify-batch-processor worker (runs one row's Dify workflow)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "invoker" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-inv"
  display_name = "dify-batch-processor task invoker (OIDC identity of Cloud Tasks calls)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-sch"
  display_name = "dify-batch-processor scheduler (OIDC identity of Cloud Scheduler calls)"
  depends_on   = [google_project_service.apis]
}

# Builds the functions' images. New projects no longer let the default compute account build,
# so the functions name their own builder.
resource "google_service_account" "builder" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-bld"
  display_name = "dify-batch-processor builder (Cloud Build for the functions)"
  depends_on   = [google_project_service.apis]
}

# What a build of the two functions needs, and no more: write its logs (Cloud Logging has no finer
# grant than the project), read the function's source, and push the image to the functions'
# repository. The source is read from the sources bucket, or from the copy Cloud Functions keeps
# in its own bucket (gcf-v2-sources-<project number>-<region>, created on the first deploy, so it
# cannot be granted on by name beforehand): that project-wide read is held to those buckets by an
# IAM condition. The predefined cloudbuild.builds.builder would also let the build write every
# repository and bucket of the project.
resource "google_project_iam_member" "builder_writes_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.builder.member

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "builder_reads_function_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.builder.member

  condition {
    title       = "gcf-v2-sources only"
    description = "The copies of the function sources that Cloud Functions keeps (gcf-v2-sources-*)."
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-\")"
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "builder_reads_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.builder.member
}

resource "google_artifact_registry_repository_iam_member" "builder_writes_images" {
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.builder.member
}

# IAM takes up to a couple of minutes to propagate: a build started right after the grants can
# fail and leave the function failed until a second apply. The builds wait for this.
# The triggers re-create the wait (and so wait again) when the builder account is re-created.
resource "time_sleep" "builder_grants_propagated" {
  create_duration = "${var.iam_propagation_seconds}s"

  triggers = {
    builder = google_service_account.builder.unique_id
  }

  depends_on = [
    google_project_iam_member.builder_writes_logs,
    google_project_iam_member.builder_reads_function_sources,
    google_storage_bucket_iam_member.builder_reads_sources,
    google_artifact_registry_repository_iam_member.builder_writes_images,
  ]
}

# Datastore has no finer grant than the project: both functions read and write status rows.
resource "google_project_iam_member" "loader_datastore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.loader.member

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "worker_datastore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.worker.member

  depends_on = [google_project_service.apis]
}

# The loader creates tasks in this one queue, and lists them to find rows whose task is gone.
resource "google_cloud_tasks_queue_iam_member" "loader_enqueuer" {
  for_each = google_cloud_tasks_queue.rows

  project  = var.project_id
  location = var.region
  name     = each.value.name
  role     = "roles/cloudtasks.enqueuer"
  member   = google_service_account.loader.member
}

resource "google_cloud_tasks_queue_iam_member" "loader_viewer" {
  for_each = google_cloud_tasks_queue.rows

  project  = var.project_id
  location = var.region
  name     = each.value.name
  role     = "roles/cloudtasks.viewer"
  member   = google_service_account.loader.member
}

# Pausing and resuming the queue (a wrong key or a used-up quota pauses the batch rather than
# failing every row): the worker may only pause, the loader only resume (resume=true), each on
# this one queue. Custom roles, since the predefined queueAdmin would also allow purging and
# deleting the queue. A destroyed custom role is only soft-deleted: an apply within 7 days
# undeletes it (the provider does), but from 7 to 37 days after the destroy its id cannot be
# used; the ids carry the name prefix, so an apply in that window needs another prefix.
resource "google_project_iam_custom_role" "queue_pauser" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_queue_pauser"
  title       = "dify-batch-processor queue pauser"
  description = "Pause the rows queue when Dify fails every row alike."
  permissions = ["cloudtasks.queues.pause"]

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_custom_role" "queue_resumer" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_queue_resumer"
  title       = "dify-batch-processor queue resumer"
  description = "Resume the rows queue after an operator fixed the cause of a pause."
  permissions = ["cloudtasks.queues.resume"]

  depends_on = [google_project_service.apis]
}

resource "google_cloud_tasks_queue_iam_member" "worker_pauses" {
  for_each = google_cloud_tasks_queue.rows

  project  = var.project_id
  location = var.region
  name     = each.value.name
  role     = google_project_iam_custom_role.queue_pauser.id
  member   = google_service_account.worker.member
}

resource "google_cloud_tasks_queue_iam_member" "loader_resumes" {
  for_each = google_cloud_tasks_queue.rows

  project  = var.project_id
  location = var.region
  name     = each.value.name
  role     = google_project_iam_custom_role.queue_resumer.id
  member   = google_service_account.loader.member
}

# Creating a task with an OIDC token of the invoker account needs actAs on that account.
resource "google_service_account_iam_member" "loader_acts_as_invoker" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.loader.member
}

# Each function reads the Dify key secrets (the single workflow's, or one per workflow); the values
# are added with gcloud, never by Terraform. One grant per secret. The single workflow's secret
# (dify_api_key_secret_id) keeps its grant at the same address, worker_dify_key[0], also once
# `workflows` replace the single workflow, as long as dify_api_key_secret_id still names it and a
# workflow uses it: the switch then neither destroys nor re-creates it (a destroy that lands
# after the create of the same binding elsewhere would strip the function's access). The other
# workflows' secrets are granted keyed by the secret's id, so adding or removing a workflow
# touches only its own secret's grant.
resource "google_secret_manager_secret_iam_member" "worker_dify_key" {
  count = local.single_secret_kept ? 1 : 0

  project   = var.project_id
  secret_id = var.dify_api_key_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.worker.member
}

resource "google_secret_manager_secret_iam_member" "worker_workflow_keys" {
  for_each = local.workflow_secret_ids

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.worker.member
}

# The loader reads the workflows' input forms with the same keys (check_inputs).
resource "google_secret_manager_secret_iam_member" "loader_dify_key" {
  count = var.check_inputs && local.single_secret_kept ? 1 : 0

  project   = var.project_id
  secret_id = var.dify_api_key_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.loader.member
}

resource "google_secret_manager_secret_iam_member" "loader_workflow_keys" {
  for_each = var.check_inputs ? local.workflow_secret_ids : toset([])

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.loader.member
}

resource "google_secret_manager_secret_iam_member" "loader_sheets_key" {
  count = var.google_sheets_credentials_secret_id == "" ? 0 : 1

  project   = var.project_id
  secret_id = var.google_sheets_credentials_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.loader.member
}

# Invokers: the function IAM resource refuses roles/run.invoker, so grant it on the Cloud
# Run service underneath each function (same name).
resource "google_cloud_run_service_iam_member" "worker_invoker" {
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.worker.name
  role     = "roles/run.invoker"
  member   = google_service_account.invoker.member
}

resource "google_cloud_run_service_iam_member" "loader_invoker" {
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.loader.name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}
