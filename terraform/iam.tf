# Least-privilege roles per component, each trusted only by its own ServiceAccount (IRSA).
# The control server and Envoy need no AWS API and get no role.

# Triton reads the model bucket itself (--model-repository=s3://...), nothing else.
data "aws_iam_policy_document" "triton_models" {
  statement {
    sid       = "ListTheModelRepository"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.models.arn]
  }
  statement {
    sid       = "ReadModels"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.models.arn}/*"]
  }
  statement {
    sid       = "DecryptModels"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.artifacts.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "triton_models" {
  name_prefix = "${var.name}-triton-models-"
  description = "Read the model repository bucket (Triton pods, IRSA)"
  policy      = data.aws_iam_policy_document.triton_models.json
}

module "triton_irsa" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version (version = below); a git commit source would bypass the registry resolution that terraform init verifies and that update tooling follows
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "5.44.0"

  role_name_prefix = "${var.name}-triton-"
  role_policy_arns = { models = aws_iam_policy.triton_models.arn }
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = [module.catalog.triton_service_account]
    }
  }
}

module "ebs_csi_irsa" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version (version = below); a git commit source would bypass the registry resolution that terraform init verifies and that update tooling follows
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "5.44.0"

  role_name_prefix      = "${var.name}-ebs-csi-"
  attach_ebs_csi_policy = true
  ebs_csi_kms_cmk_ids   = [aws_kms_key.ebs.arn]
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:ebs-csi-controller-sa"]
    }
  }
}

module "load_balancer_controller_irsa" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version (version = below); a git commit source would bypass the registry resolution that terraform init verifies and that update tooling follows
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "5.44.0"

  role_name_prefix                       = "${var.name}-lb-controller-"
  attach_load_balancer_controller_policy = true
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:aws-load-balancer-controller"]
    }
  }
}
