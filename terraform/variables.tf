variable "name" {
  description = "Name of the platform: the EKS cluster, ECR repositories and buckets are named after it."
  type        = string
  default     = "inference-platform"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name: 3-31 characters, lower-case letters, digits and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region. data/prices.yaml is for us-east-1; another region needs its prices."
  type        = string
  default     = "us-east-1"
  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "availability_zones" {
  description = "Three zones of the region, named explicitly so the subnets never move when AWS adds a zone."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b", "us-east-1c"]
  validation {
    condition     = length(var.availability_zones) == 3 && alltrue([for z in var.availability_zones : startswith(z, var.region)])
    error_message = "availability_zones: exactly three zones of var.region."
  }
}

variable "environment" {
  description = "dev or prod: which k8s overlay the cluster runs (k8s/overlays/<environment>)."
  type        = string
  default     = "prod"
  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be dev or prod."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; split into three private, three public and three intra subnets."
  type        = string
  default     = "10.40.0.0/16"
  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) <= 18
    error_message = "vpc_cidr must be an IPv4 CIDR of /18 or larger (pods take VPC addresses)."
  }
}

variable "kubernetes_version" {
  description = "EKS control-plane version; the manifests are validated against it (tests/deploy)."
  type        = string
  default     = "1.31"
  validation {
    condition     = can(regex("^1\\.(3[0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be 1.30 or later (PodLifecycleSleepAction is used by the pods' preStop)."
  }
}

variable "system_node_instance_types" {
  description = "Graviton instance types of the managed node group that runs Envoy, the control server and add-ons."
  type        = list(string)
  default     = ["m7g.large"]
  validation {
    condition     = alltrue([for t in var.system_node_instance_types : can(regex("^[a-z][0-9]+g[a-z]*\\.", t))])
    error_message = "system nodes are Graviton (arm64): instance types like m7g.large."
  }
}

variable "pools" {
  description = "Accelerator pools and the instance types Karpenter may buy for each (priced in data/prices.yaml)."
  type = map(object({
    accelerator    = string
    instance_types = list(string)
  }))
  default = {
    cpu  = { accelerator = "cpu", instance_types = ["c7g.xlarge", "c7g.2xlarge"] }
    gpu  = { accelerator = "gpu", instance_types = ["g5.xlarge", "g5.2xlarge"] }
    inf2 = { accelerator = "inferentia", instance_types = ["inf2.xlarge", "inf2.8xlarge"] }
  }
}

variable "admin_role_arns" {
  description = "IAM roles granted cluster-admin through EKS access entries (the people and CI that deploy)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for a in var.admin_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/", a))])
    error_message = "admin_role_arns must be IAM role ARNs."
  }
}

variable "api_public_access_cidrs" {
  description = "CIDRs that may reach the EKS API's public endpoint: where terraform (Helm releases) and deploy/cli.py (kubectl) run, e.g. [\"203.0.113.7/32\"]. No default: an open API is a decision to write down."
  type        = list(string)
  validation {
    condition     = length(var.api_public_access_cidrs) > 0 && alltrue([for c in var.api_public_access_cidrs : can(cidrnetmask(c))])
    error_message = "api_public_access_cidrs: one or more IPv4 CIDRs (export TF_VAR_api_public_access_cidrs='[\"<your IP>/32\"]')."
  }
}

variable "create_service_linked_roles" {
  description = "Create the Auto Scaling (and, in dev, EC2 Spot) service-linked roles the KMS key policy names. True for a fresh account; false where the account already has them (creating one twice fails)."
  type        = bool
  default     = true
}

variable "alert_email_addresses" {
  description = "Email addresses subscribed to the alerts SNS topic (each confirms by the link AWS mails). Alertmanager pages (severity page/critical) there, and sends warnings there too unless Slack is configured."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for a in var.alert_email_addresses : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", a))])
    error_message = "alert_email_addresses: email addresses like oncall@example.com."
  }
}

variable "alert_slack_webhook_url" {
  description = "Slack incoming-webhook URL for Alertmanager (warnings, and pages besides SNS); null for none. Kept only in the Secret alertmanager-receivers, which Alertmanager reads as a file."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.alert_slack_webhook_url == null || can(regex("^https://hooks\\.slack\\.com/", var.alert_slack_webhook_url))
    error_message = "alert_slack_webhook_url must be a https://hooks.slack.com/... URL (or null)."
  }
}
