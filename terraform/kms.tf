# Customer-managed keys, one per purpose so that a grant on one never opens another; all rotate
# yearly. In a key policy `resources = ["*"]` means "this key" (AWS's own wording), which is why
# the checkov IAM-wildcard checks are skipped on these documents only.

resource "aws_kms_key" "secrets" {
  description             = "${var.name}: EKS secrets envelope encryption"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key_admin_only.json
}

resource "aws_kms_alias" "secrets" {
  name          = "alias/${var.name}/eks-secrets"
  target_key_id = aws_kms_key.secrets.key_id
}

resource "aws_kms_key" "ebs" {
  description             = "${var.name}: EBS volumes of the nodes and of the control server's state"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.ebs_key.json
}

resource "aws_kms_alias" "ebs" {
  name          = "alias/${var.name}/ebs"
  target_key_id = aws_kms_key.ebs.key_id
}

resource "aws_kms_key" "artifacts" {
  description             = "${var.name}: model repository bucket and ECR images"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key_admin_only.json
}

resource "aws_kms_alias" "artifacts" {
  name          = "alias/${var.name}/artifacts"
  target_key_id = aws_kms_key.artifacts.key_id
}

# The account administers the key; IAM policies (IRSA roles in iam.tf) grant its use.
data "aws_iam_policy_document" "key_admin_only" {
  #checkov:skip=CKV_AWS_109:In a KMS key policy, resources "*" is the key itself
  #checkov:skip=CKV_AWS_111:In a KMS key policy, resources "*" is the key itself
  #checkov:skip=CKV_AWS_356:In a KMS key policy, resources "*" is the key itself
  statement {
    sid       = "AccountAdministersTheKey"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

# EBS volumes are created by EC2 on behalf of Karpenter (CreateFleet) and of the EBS CSI driver:
# both need grants through EC2, and only through EC2.
data "aws_iam_policy_document" "ebs_key" {
  #checkov:skip=CKV_AWS_109:In a KMS key policy, resources "*" is the key itself
  #checkov:skip=CKV_AWS_111:In a KMS key policy, resources "*" is the key itself
  #checkov:skip=CKV_AWS_356:In a KMS key policy, resources "*" is the key itself
  source_policy_documents = [data.aws_iam_policy_document.key_admin_only.json]
  statement {
    sid = "EC2UsesTheKeyForKarpenterAndEbsCsi"
    actions = [
      "kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt",
      "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo",
    ]
    resources = ["*"]
    principals {
      type = "AWS"
      identifiers = [
        module.karpenter.iam_role_arn,
        module.karpenter.node_iam_role_arn,
        # The managed node group's Auto Scaling group launches encrypted root volumes with this key.
        # A key policy naming a principal that does not exist is rejected, and a fresh account has
        # no Auto Scaling service-linked role until one is used: the local makes the key wait for it.
        local.autoscaling_service_role_arn,
      ]
    }
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ec2.${var.region}.amazonaws.com"]
    }
  }
}

# Service-linked roles a fresh account lacks: Auto Scaling's (named in the EBS key policy above)
# and, in dev where the CPU pool may run on Spot, EC2 Spot's (Karpenter's CreateFleet needs it).
resource "aws_iam_service_linked_role" "autoscaling" {
  count            = var.create_service_linked_roles ? 1 : 0
  aws_service_name = "autoscaling.amazonaws.com"
}

resource "aws_iam_service_linked_role" "spot" {
  count            = var.create_service_linked_roles && var.environment == "dev" ? 1 : 0
  aws_service_name = "spot.amazonaws.com"
}

locals {
  # Through the resource when it is created here, so the key policy is written after it exists.
  autoscaling_service_role_arn = (var.create_service_linked_roles ? aws_iam_service_linked_role.autoscaling[0].arn :
  "arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling")
}
