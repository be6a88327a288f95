# The platform's catalogue: which pools exist, on which instance families, which images and
# service accounts they need. Pure values, no provider: it is validated, planned and tested
# offline (`terraform test`), and the root module builds ECR repositories, IRSA trust and S3
# prefixes from its outputs so that names are spelled once.

terraform {
  required_version = ">= 1.6"
}

variable "name" {
  description = "Name of the platform; prefixes the cluster, repositories and buckets."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name: 3-31 characters, lower-case letters, digits and '-', starting with a letter."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the platform's workloads (k8s/base/namespace.yaml)."
  type        = string
  default     = "inference"
}

variable "pools" {
  description = "Accelerator pools: name -> accelerator and the instance types Karpenter may buy (must be priced in data/prices.yaml)."
  type = map(object({
    accelerator    = string
    instance_types = list(string)
  }))
  validation {
    condition     = alltrue([for p in values(var.pools) : contains(["cpu", "gpu", "inferentia"], p.accelerator)])
    error_message = "pools[*].accelerator must be one of cpu, gpu, inferentia."
  }
  validation {
    condition = alltrue([for p in values(var.pools) : alltrue([
      for t in p.instance_types : can(regex(lookup({ cpu = "^c7g\\.", gpu = "^g5\\.", inferentia = "^inf2\\." }, p.accelerator, "^$"), t))
    ])])
    error_message = "pools[*].instance_types must match the accelerator: cpu -> c7g.*, gpu -> g5.*, inferentia -> inf2.*."
  }
  validation {
    condition     = length(var.pools) > 0 && alltrue([for p in values(var.pools) : length(p.instance_types) > 0])
    error_message = "pools must name at least one pool, each with at least one instance type."
  }
}

locals {
  # One image per accelerator plus the control server and the Envoy gateway (triton_images/*).
  triton_images = { for a in distinct([for p in values(var.pools) : p.accelerator]) : a => "triton-${a}" }
  images        = concat(sort(values(local.triton_images)), ["xds-control", "envoy-gateway"])
}

output "ecr_repository_names" {
  description = "ECR repositories to create, one per image in triton_images/."
  value       = [for i in local.images : "${var.name}/${i}"]
}

output "model_repository_prefixes" {
  description = "S3 prefix of each pool's model repository (the Triton init container syncs it)."
  value       = { for name, p in var.pools : name => "${name}/" }
}

output "triton_service_account" {
  description = "namespace:serviceaccount of the Triton pods (IRSA trust subject)."
  value       = "${var.namespace}:triton"
}

output "karpenter_nodepools" {
  description = "Karpenter NodePool name per pool (k8s/base/karpenter)."
  value       = { for name, p in var.pools : name => "triton-${p.accelerator}" }
}

output "instance_types" {
  description = "Every instance type any pool may run on."
  value       = sort(distinct(flatten([for p in values(var.pools) : p.instance_types])))
}
