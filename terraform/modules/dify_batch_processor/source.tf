# Each function's zip: its main.py at the root, the shared/ package beside it, and the pinned
# requirements.txt the tests ran with. Built from file contents with a fixed file mode, so an
# unchanged tree gives the same zip; the object is named after the zip's hash, so a code change
# deploys a new revision and an unchanged one deploys nothing.

locals {
  shared_files = {
    for f in fileset("${local.source_root}/shared", "**/*.py") : "shared/${f}" => "${local.source_root}/shared/${f}"
  }
  function_files = {
    loader = merge(local.shared_files, {
      "main.py"          = "${local.source_root}/loader/main.py"
      "requirements.txt" = "${local.source_root}/requirements.txt"
    })
    worker = merge(local.shared_files, {
      "main.py"          = "${local.source_root}/worker/main.py"
      "requirements.txt" = "${local.source_root}/requirements.txt"
    })
  }
}

# Holds each function's current zip only: the object is named after the zip's hash, so a code
# change replaces it and Terraform deletes the old one. No age-based lifecycle rule: it would
# delete the zips that are deployed (they change only with the code), after which every plan
# would upload both again.
resource "google_storage_bucket" "sources" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = local.labels

  depends_on = [google_project_service.apis]
}

data "archive_file" "function" {
  for_each = local.function_files

  type             = "zip"
  output_path      = "${path.root}/build/${var.name_prefix}-${each.key}.zip"
  output_file_mode = "0644"

  dynamic "source" {
    for_each = each.value
    content {
      filename = source.key
      content  = file(source.value)
    }
  }
}

resource "google_storage_bucket_object" "function" {
  for_each = data.archive_file.function

  bucket = google_storage_bucket.sources.name
  name   = "${each.key}/${each.value.output_md5}.zip"
  source = each.value.output_path
}

# The functions' images (each deploy pushes one per function). Artifact Registry deletes a version
# that matches a DELETE policy and no KEEP policy, in a daily run: versions older than 30 days go,
# except the 5 newest of each image, which stay whatever their age.
resource "google_artifact_registry_repository" "functions" {
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-functions"
  description   = "Images of the dify-batch-processor functions (over 30 days old and not among the 5 newest: deleted)."
  format        = "DOCKER"
  labels        = local.labels

  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-newest"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }
  cleanup_policies {
    id     = "delete-older-than-30-days"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis]
}
