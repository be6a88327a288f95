# Read by deploy/overlay_inputs.py (`terraform output -json`) to fill the account-specific values
# of the k8s overlays; tests/deploy/test_terraform.py checks that every name it consumes exists here.

output "cluster_name" {
  description = "EKS cluster name; also the karpenter.sh/discovery tag on subnets and security groups."
  value       = module.eks.cluster_name
}

output "region" {
  description = "AWS region of the cluster."
  value       = var.region
}

output "environment" {
  description = "Which k8s overlay to apply (k8s/overlays/<environment>)."
  value       = var.environment
}

output "karpenter_node_role_name" {
  description = "IAM role of the nodes Karpenter launches (EC2NodeClass spec.role)."
  value       = module.karpenter.node_iam_role_name
}

output "ebs_kms_key_arn" {
  description = "KMS key for node volumes (EC2NodeClass) and the control server's state (StorageClass)."
  value       = aws_kms_key.ebs.arn
}

output "model_bucket_name" {
  description = "S3 bucket of the model repository (make deploy-models syncs it)."
  value       = aws_s3_bucket.models.id
}

output "triton_role_arn" {
  description = "IRSA role of the triton ServiceAccount (reads the model bucket)."
  value       = module.triton_irsa.iam_role_arn
}

output "ecr_repository_urls" {
  description = "Image name (as in k8s/base/kustomization.yaml images) -> ECR repository URL."
  value       = { for name, repo in aws_ecr_repository.images : basename(name) => repo.repository_url }
}
