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

# --- DNS -----------------------------------------------------------------------------------------

variable "route53_zone_id" {
  description = "Id of an existing public Route 53 hosted zone that contains relay_domain (e.g. the zone of example.com)."
  type        = string
}

variable "relay_domain" {
  description = "Parent name of the relay nodes: node N answers on N.{relay_domain} and *.N.{relay_domain}."
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

# --- control plane (ElastiCache) -----------------------------------------------------------------

variable "redis_engine" {
  description = "ElastiCache engine: valkey or redis. Cluster mode stays disabled (the router's Lua script touches many keys)."
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

variable "redis_auth_token" {
  description = "AUTH token for the control plane, 16-128 characters from A-Z a-z 0-9 - . _ ~ (it goes into a URL unescaped). Pass it as TF_VAR_redis_auth_token, e.g. from `openssl rand -hex 32`."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^[A-Za-z0-9._~-]{16,128}$", var.redis_auth_token))
    error_message = "redis_auth_token: 16 to 128 characters from A-Z a-z 0-9 - . _ ~."
  }
}

# --- relay fleet ---------------------------------------------------------------------------------

variable "relay_instance_type" {
  description = "EC2 instance type of a relay node (x86_64; see relay_architecture)."
  type        = string
  default     = "c6i.large"
}

variable "relay_architecture" {
  description = "CPU architecture of relay_instance_type: x86_64 or arm64 (picks the Amazon Linux 2023 AMI)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.relay_architecture)
    error_message = "relay_architecture must be x86_64 or arm64."
  }
}

variable "relay_wheel_s3_uri" {
  description = "s3://bucket/key of the polysocket wheel that relays install at boot (`pip wheel --no-deps -w dist .`, then `aws s3 cp`)."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9.-]{3,63}/.+\\.whl$", var.relay_wheel_s3_uri))
    error_message = "relay_wheel_s3_uri must look like s3://bucket/path/polysocket-0.1.0-py3-none-any.whl."
  }
}

variable "relay_port" {
  description = "Port the relays serve HTTP on (clients use http://{uniq}.{node}.{relay_domain}/, so 80 unless a proxy is in front)."
  type        = number
  default     = 80
}

variable "relay_capacity" {
  description = "Most sockets one relay holds (--capacity); the router stops picking a full node."
  type        = number
  default     = 10000
}

variable "relay_drain_grace" {
  description = "Seconds a relay keeps serving after SIGTERM before closing its sockets with 1001 (--drain-grace)."
  type        = number
  default     = 10
}

variable "relay_min_size" {
  description = "Fewest relay instances."
  type        = number
  default     = 2
}

variable "relay_max_size" {
  description = "Most relay instances."
  type        = number
  default     = 10
}

variable "relay_desired_capacity" {
  description = "Relay instances at creation (autoscaling moves it afterwards; Terraform ignores later changes)."
  type        = number
  default     = 2
}

variable "scale_on_sockets_target" {
  description = "Target average polysocket_open_sockets per relay for target tracking; 0 disables that policy."
  type        = number
  default     = 6000
}

variable "scale_on_cpu_target" {
  description = "Target average CPU utilisation (%) per relay for target tracking; 0 disables that policy."
  type        = number
  default     = 60
}

variable "scale_in_enabled" {
  description = "Let target tracking remove relays. Removing one drains it: its sockets are closed with 1001 and clients reconnect through the router."
  type        = bool
  default     = true
}

variable "relay_ingress_cidrs" {
  description = "IPv4 CIDRs allowed to reach the relays' HTTP port (browsers: everyone)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}
