# Most projects already have their (default) database; create it only when asked. Status rows
# are the record of every run: the database is never deleted with the stack (ABANDON).
resource "google_firestore_database" "default" {
  count = var.create_firestore_database ? 1 : 0

  project          = var.project_id
  name             = "(default)"
  location_id      = var.firestore_location
  type             = "DATASTORE_MODE"
  concurrency_mode = "PESSIMISTIC"
  deletion_policy  = "ABANDON"

  depends_on = [google_project_service.apis]
}

# Composite indexes for the operator's command line (`dify-batch status` lists the latest
# failures and the rows waiting for a retry; `dify-batch export --status` orders one status by
# sheet row). Every other query
# (counts by status, the loader's recovery of expired claims) uses the built-in indexes.
resource "google_firestore_index" "status_queries" {
  for_each = {
    latest_failures = "finished_at"
    export_by_row   = "row_number"
    retrying        = "attempts"
  }

  project     = var.project_id
  database    = "(default)"
  collection  = "dify_batch_process_status"
  api_scope   = "DATASTORE_MODE_API"
  query_scope = "COLLECTION_GROUP"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = each.value
    order      = each.key == "export_by_row" ? "ASCENDING" : "DESCENDING"
  }

  depends_on = [google_firestore_database.default, google_project_service.apis]
}
