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
