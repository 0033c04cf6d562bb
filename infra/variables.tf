variable "region" {
  description = "AWS region for everything (the router Lambda must be deployed to the same one)."
  type        = string
  default     = "us-east-1"
}

variable "stage" {
  description = "Deployment stage; names resources and the SSM paths /polysocket/{stage}/... that serverless.yml reads."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,15}$", var.stage))
    error_message = "stage: lower-case letters, digits and dashes, at most 16 characters."
  }
}

# --- network -------------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the VPC created for polysocket."
  type        = string
  default     = "10.42.0.0/16"
}

variable "az_count" {
  description = "Availability zones to spread subnets (and so relays, Redis replicas and the Lambda) over."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4
    error_message = "az_count must be between 2 and 4 (ElastiCache automatic failover needs two)."
  }
}

variable "availability_zones" {
  description = "Availability zones to use, by name (e.g. [\"us-east-1a\", \"us-east-1b\"]); empty: the first az_count standard zones of the region. Set it to pin the zones for ever."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) >= 2
    error_message = "availability_zones: empty, or at least two zones."
  }
}

# --- DNS -----------------------------------------------------------------------------------------

variable "route53_zone_id" {
  description = "Id of an existing public Route 53 hosted zone that contains relay_domain (e.g. the zone of example.com)."
  type        = string
}

variable "relay_domain" {
  description = "Parent name of the relay nodes. HTTPS (default): a relay answers on the slot name it leases, sNN.{relay_domain} and *.sNN.{relay_domain}; plain HTTP: on {task id}.{relay_domain} and *.{task id}.{relay_domain}."
  type        = string
  default     = "relay.example.com"

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.relay_domain))
    error_message = "relay_domain must be a lower-case DNS name without a trailing dot."
  }
}

variable "relay_dns_ttl" {
  description = "TTL (seconds) of each relay's A records. Short: a node's address is only handed out while it heart-beats."
  type        = number
  default     = 60
}

# --- HTTPS: slot names and their certificates ---------------------------------------------------

variable "relay_plain_http" {
  description = "Serve plain HTTP on port 80, each relay named after its task, with no certificates. Only for private networks: an HTTPS page (nearly every page) cannot use an HTTP relay (mixed content). Default false: HTTPS on slot names (infra/tls.tf)."
  type        = bool
  default     = false
}

variable "relay_slot_count" {
  description = "Slot names s00, s01, ... under relay_domain, each with its own certificate (--slot-count). A relay leases one while it lives, so the fleet, during a deployment too (twice relay_max_size), never needs more; checked in ecs.tf. Each slot costs one certificate order per 60 days and three names in the task role's policy."
  type        = number
  default     = 20

  validation {
    condition     = var.relay_slot_count >= 1 && var.relay_slot_count <= 1000 && floor(var.relay_slot_count) == var.relay_slot_count
    error_message = "relay_slot_count must be a whole number from 1 to 1000 (relay_node/control/aws/slots.py MAX_SLOTS)."
  }
}

variable "acme_directory" {
  description = "ACME directory the relays order their slot certificates from (DNS-01 through route53_zone_id). Let's Encrypt's staging directory (https://acme-staging-v02.api.letsencrypt.org/directory) for a trial run."
  type        = string
  default     = "https://acme-v02.api.letsencrypt.org/directory"

  validation {
    condition     = can(regex("^https://[^\\s]+$", var.acme_directory))
    error_message = "acme_directory must be an https:// URL."
  }
}

variable "acme_email" {
  description = "Contact address of the fleet's ACME account (expiry notices); empty: none."
  type        = string
  default     = ""
}

# --- control plane: an existing Redis, or ElastiCache created here ---------------------------------

variable "redis_url" {
  description = "URL of an existing Redis / Valkey (Upstash, Redis Cloud, your own; rediss:// for TLS) to use as the control plane instead of creating ElastiCache. Empty: create ElastiCache. Pass it as TF_VAR_redis_url: it carries the password."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = var.redis_url == "" || can(regex("^rediss?(?:\\+cluster)?://[^\\s]+$", var.redis_url))
    error_message = "redis_url must be empty or a redis://, rediss://, redis+cluster:// or rediss+cluster:// URL."
  }
}

variable "redis_engine" {
  description = "ElastiCache engine: valkey or redis. Unused with redis_url."
  type        = string
  default     = "valkey"

  validation {
    condition     = contains(["valkey", "redis"], var.redis_engine)
    error_message = "redis_engine must be valkey or redis."
  }
}

variable "redis_engine_version" {
  description = "Engine version (e.g. 8.0 for valkey, 7.1 for redis)."
  type        = string
  default     = "8.0"
}

variable "redis_node_type" {
  description = "ElastiCache node type. The control plane is small: node records, inboxes, short-lived replies."
  type        = string
  default     = "cache.t4g.small"
}

variable "redis_replicas" {
  description = "Read replicas besides the primary (1 or more enables automatic failover and Multi-AZ)."
  type        = number
  default     = 1
}

variable "redis_cluster_mode" {
  description = "Create ElastiCache with cluster mode enabled (redis_shards primaries, each with redis_replicas replicas); the services get a rediss+cluster:// URL. docs/scale.md says when one primary stops being enough. Unused with redis_url (whose scheme says cluster or not)."
  type        = bool
  default     = false
}

variable "redis_shards" {
  description = "Primaries (node groups) of the ElastiCache cluster when redis_cluster_mode is on; 1 without it."
  type        = number
  default     = 1

  validation {
    condition     = var.redis_shards == floor(var.redis_shards) && var.redis_shards >= 1 && var.redis_shards <= 500
    error_message = "redis_shards: a whole number from 1 to 500."
  }
  validation {
    condition     = var.redis_cluster_mode || var.redis_shards == 1
    error_message = "redis_shards above 1 needs redis_cluster_mode = true."
  }
}

variable "redis_auth_token" {
  description = "AUTH token of the ElastiCache control plane, 16-128 characters from A-Z a-z 0-9 - . _ ~ (it goes into a URL unescaped). Pass it as TF_VAR_redis_auth_token, e.g. from `openssl rand -hex 32`. Required unless redis_url is set."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = var.redis_auth_token == "" || can(regex("^[A-Za-z0-9._~-]{16,128}$", var.redis_auth_token))
    error_message = "redis_auth_token: 16 to 128 characters from A-Z a-z 0-9 - . _ ~."
  }
}

# --- relay fleet (ECS on Fargate) -------------------------------------------------------------------

variable "relay_image" {
  description = "Relay container image (the Dockerfile at the repository root). Empty: the ECR repository created here, at relay_image_tag."
  type        = string
  default     = ""

  validation {
    condition     = var.relay_image == "" || can(regex("^[^\\s]+(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})$", var.relay_image))
    error_message = "relay_image needs an explicit tag or digest (never an implicit latest)."
  }
}

variable "relay_image_tag" {
  description = "Tag of the image in the ECR repository created here (tags there are immutable: push a new tag per release)."
  type        = string
  default     = "0.1.0"
}

variable "relay_cpu" {
  description = "Fargate CPU units of one relay task (1024 = 1 vCPU): 256, 512 or 1024. A relay is one process on one event loop, so it never uses more than one vCPU: scale out with tasks, not with CPU units."
  type        = number
  default     = 1024

  # Above 1024 a task pays for cores the relay leaves idle, and the service's CPU utilisation (what
  # scale_on_cpu_target tracks) stays at or below 1024 / relay_cpu of a saturated relay's: at 2048 a
  # relay pinned at 100 % of its one core reads 50 %, under the default target of 60 %, and the
  # fleet never grows on CPU.
  validation {
    condition     = contains([256, 512, 1024], var.relay_cpu)
    error_message = "relay_cpu must be 256, 512 or 1024: a relay uses at most one vCPU (one process, one event loop), and a larger task would hide its load from the CPU scaling policy. Scale out with relay_max_size instead."
  }
}

variable "relay_memory" {
  description = "Fargate memory (MiB) of one relay task: 512, 1024 or 2048 with relay_cpu 256; 1024 to 4096 with 512; 2048 to 8192 with 1024 (in steps of 1024)."
  type        = number
  default     = 2048
}

variable "relay_architecture" {
  description = "CPU architecture of the relay image and its tasks: X86_64 or ARM64 (Graviton)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.relay_architecture)
    error_message = "relay_architecture must be X86_64 or ARM64."
  }
}

variable "relay_port" {
  description = "Port the relays serve on, which is also their public port (awsvpc: no port mapping). Default: 443 (HTTPS), or 80 with relay_plain_http."
  type        = number
  default     = null

  validation {
    condition     = var.relay_port == null || try(var.relay_port >= 1 && var.relay_port <= 65535, false)
    error_message = "relay_port must be a TCP port (1-65535), or null for 443 / 80."
  }
}

variable "relay_capacity" {
  description = "Most sockets one relay holds (--capacity); the router stops picking a full node."
  type        = number
  default     = 10000
}

variable "relay_nofile" {
  description = "File-descriptor limit of a relay task (each socket uses two). Fargate allows up to 1048576."
  type        = number
  default     = 1048576

  validation {
    condition     = var.relay_nofile >= 1024 && var.relay_nofile <= 1048576
    error_message = "relay_nofile must be between 1024 and 1048576 (Fargate's maximum)."
  }
}

variable "relay_drain_grace" {
  description = "Seconds a relay keeps serving after SIGTERM before closing its sockets with 1001 (--drain-grace). The task gets drain grace + 30 s to stop; Fargate allows 120 s at most."
  type        = number
  default     = 10

  validation {
    condition     = var.relay_drain_grace >= 0 && var.relay_drain_grace <= 90
    error_message = "relay_drain_grace must be between 0 and 90 seconds (Fargate stops a task at most 120 s after SIGTERM)."
  }
}

variable "relay_metrics_token" {
  description = "Bearer token that relays require on GET /metrics (they serve it on their public port). Pass it as TF_VAR_relay_metrics_token, e.g. from `openssl rand -hex 32`; stored as an SSM SecureString for scrapers."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^[A-Za-z0-9._~-]{16,256}$", var.relay_metrics_token))
    error_message = "relay_metrics_token: 16 to 256 characters from A-Z a-z 0-9 - . _ ~."
  }
}

variable "relay_metric_interval" {
  description = "Seconds between two CloudWatch datapoints of each relay (--cloudwatch-interval). Target tracking averages them per minute."
  type        = number
  default     = 60
}

variable "relay_environment" {
  description = "More POLYSOCKET_* settings for the relay container (see `polysocket relay --help`); they win over the ones set here."
  type        = map(string)
  default     = {}
}

variable "relay_log_retention_days" {
  description = "Days the relays' logs are kept in CloudWatch Logs."
  type        = number
  default     = 30
}

variable "relay_min_size" {
  description = "Fewest relay tasks."
  type        = number
  default     = 2
}

variable "relay_max_size" {
  description = "Most relay tasks."
  type        = number
  default     = 10
}

variable "relay_desired_capacity" {
  description = "Relay tasks at creation (autoscaling moves it afterwards; Terraform ignores later changes)."
  type        = number
  default     = 2
}

variable "scale_on_utilization_target" {
  description = "Target average relay Utilization (open sockets / capacity, %) for target tracking, as the relays publish it; 0 disables that policy."
  type        = number
  default     = 60

  validation {
    condition     = var.scale_on_utilization_target >= 0 && var.scale_on_utilization_target < 100
    error_message = "scale_on_utilization_target must be below 100 (%), or nodes fill up before the fleet grows; 0 disables it."
  }
}

variable "scale_on_cpu_target" {
  description = "Target average CPU utilisation (%) of the relay service for target tracking; 0 disables that policy."
  type        = number
  default     = 60
}

variable "scale_in_enabled" {
  description = "Let target tracking remove relays. Removing one drains it: its sockets are closed with 1001 and clients reconnect through the router."
  type        = bool
  default     = true
}

variable "relay_ingress_cidrs" {
  description = "IPv4 CIDRs allowed to reach the relays' port (browsers: everyone)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}
