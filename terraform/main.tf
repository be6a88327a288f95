# The platform's AWS side: VPC, EKS with a Graviton system node group, Karpenter for the accelerator
# pools, and what the workloads need (KMS, ECR, S3, IRSA roles). Community modules are pinned to
# exact versions; the resources written here (kms.tf, s3.tf, ecr.tf, iam.tf) are the ones checkov
# can see offline, since registry modules are not fetched in CI.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  azs        = var.availability_zones
  tags = {
    "app.kubernetes.io/part-of" = "inference-platform"
    environment                 = var.environment
    "managed-by"                = "terraform"
  }
}

# Names shared with the k8s manifests (pure values; tested offline with `terraform test`).
module "catalog" {
  source = "./modules/platform_catalog"
  name   = var.name
  pools  = var.pools
}

module "vpc" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version (version = below); a git commit source would bypass the registry resolution that terraform init verifies and that update tooling follows
  source  = "terraform-aws-modules/vpc/aws"
  version = "5.13.0"

  name = var.name
  cidr = var.vpc_cidr
  azs  = local.azs

  private_subnets = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets  = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 8, 48 + i)]
  intra_subnets   = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 8, 52 + i)]

  enable_nat_gateway     = true
  one_nat_gateway_per_az = var.environment == "prod"
  single_nat_gateway     = var.environment != "prod"

  enable_flow_log                      = true
  create_flow_log_cloudwatch_log_group = true
  create_flow_log_cloudwatch_iam_role  = true
  flow_log_max_aggregation_interval    = 60

  public_subnet_tags = { "kubernetes.io/role/elb" = 1 }
  private_subnet_tags = {
    "kubernetes.io/role/internal-elb" = 1
    # Karpenter's EC2NodeClasses select subnets by this tag (k8s/base/karpenter).
    "karpenter.sh/discovery" = var.name
  }
}

module "eks" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version (version = below); a git commit source would bypass the registry resolution that terraform init verifies and that update tooling follows
  source  = "terraform-aws-modules/eks/aws"
  version = "20.24.0"

  cluster_name    = var.name
  cluster_version = var.kubernetes_version

  vpc_id                   = module.vpc.vpc_id
  subnet_ids               = module.vpc.private_subnets
  control_plane_subnet_ids = module.vpc.intra_subnets

  # The same `terraform apply` installs Helm releases (addons.tf) and deploy/cli.py then runs
  # kubectl, both from the operator's machine or CI, outside the VPC: the public endpoint is on,
  # limited to the CIDRs given; nodes and pods reach the API through the private endpoint.
  cluster_endpoint_public_access       = true
  cluster_endpoint_public_access_cidrs = var.api_public_access_cidrs
  cluster_endpoint_private_access      = true

  # Secrets envelope-encrypted with our own rotating key (kms.tf), not the module's.
  create_kms_key = false
  cluster_encryption_config = {
    resources        = ["secrets"]
    provider_key_arn = aws_kms_key.secrets.arn
  }
  cluster_enabled_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  authentication_mode                      = "API"
  enable_cluster_creator_admin_permissions = true
  access_entries = {
    for i, arn in var.admin_role_arns : "admin-${i}" => {
      principal_arn = arn
      policy_associations = {
        admin = {
          policy_arn   = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
          access_scope = { type = "cluster" }
        }
      }
    }
  }

  cluster_addons = {
    coredns    = {}
    kube-proxy = {}
    # enableNetworkPolicy: the VPC CNI's network policy agent enforces k8s/base/security's
    # NetworkPolicies (without it they are accepted and ignored).
    vpc-cni = {
      before_compute       = true
      configuration_values = jsonencode({ enableNetworkPolicy = "true" })
    }
    eks-pod-identity-agent = {}
    aws-ebs-csi-driver     = { service_account_role_arn = module.ebs_csi_irsa.iam_role_arn }
  }

  # The system node group: Graviton, runs Envoy, the control server and the add-ons. The
  # accelerator pools are Karpenter's (k8s/base/karpenter), tainted so nothing else lands there.
  eks_managed_node_groups = {
    system = {
      ami_type       = "AL2023_ARM_64_STANDARD"
      instance_types = var.system_node_instance_types
      min_size       = 2
      max_size       = 6
      desired_size   = 3
      labels         = { "inference.platform/role" = "system" }
      block_device_mappings = {
        root = {
          device_name = "/dev/xvda"
          ebs = {
            volume_size = 50
            volume_type = "gp3"
            encrypted   = true
            kms_key_id  = aws_kms_key.ebs.arn
          }
        }
      }
      metadata_options = {
        http_endpoint               = "enabled"
        http_tokens                 = "required"
        http_put_response_hop_limit = 1
      }
    }
  }

  node_security_group_tags = { "karpenter.sh/discovery" = var.name }
  # The control plane calls istiod's sidecar-injection webhook (15017; failurePolicy Fail, so
  # without this rule no pod in the injected namespace is ever created) and reaches its xDS/CA
  # port (15012). Karpenter's nodes carry this security group too (selected by the tag above).
  node_security_group_additional_rules = {
    istio_webhook_from_control_plane = {
      description                   = "Istio sidecar injection webhook (istiod) from the EKS control plane"
      protocol                      = "tcp"
      from_port                     = 15017
      to_port                       = 15017
      type                          = "ingress"
      source_cluster_security_group = true
    }
    istio_xds_from_control_plane = {
      description                   = "istiod xDS and CA (15012) from the EKS control plane"
      protocol                      = "tcp"
      from_port                     = 15012
      to_port                       = 15012
      type                          = "ingress"
      source_cluster_security_group = true
    }
  }
}

# Karpenter's controller role (EKS Pod Identity), node role, and the interruption queue that
# EventBridge feeds with spot interruptions, rebalance and health events.
module "karpenter" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version (version = below); a git commit source would bypass the registry resolution that terraform init verifies and that update tooling follows
  source  = "terraform-aws-modules/eks/aws//modules/karpenter"
  version = "20.24.0"

  cluster_name                    = module.eks.cluster_name
  enable_v1_permissions           = true
  enable_pod_identity             = true
  create_pod_identity_association = true
  namespace                       = "kube-system"

  node_iam_role_use_name_prefix = false
  node_iam_role_name            = "KarpenterNode-${var.name}"
  node_iam_role_additional_policies = {
    AmazonSSMManagedInstanceCore = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
  }
}
