terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.73, < 6.0" # 5.73 added engine = "valkey" to aws_elasticache_replication_group
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project = "polysocket"
      Stage   = var.stage
    }
  }
}
