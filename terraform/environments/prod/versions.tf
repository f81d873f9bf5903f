terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 8.0, < 9.0"
    }
    time = {
      source  = "hashicorp/time"
      version = ">= 0.9, < 1.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4, < 3.0"
    }
  }

  # State is local by default. For a team, keep it in a bucket (create it first):
  # backend "gcs" {
  #   bucket = "<project>-tfstate"
  #   prefix = "dify-batch-processor/<env>"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
