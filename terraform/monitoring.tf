# Monitoring that keeps its data and reaches people (issue 13): Prometheus and Alertmanager on
# encrypted gp3 volumes of a StorageClass created here, before the chart that claims it (the EBS
# CSI driver is an EKS add-on with its IRSA role, main.tf and iam.tf), and Alertmanager's
# receivers: an SNS topic it publishes to with its own IRSA role, plus Slack when a webhook URL
# is given (kept in a Secret, never in the config). Checked offline by
# tests/deploy/test_monitoring.py (deploy/monitoring_checks.py).

resource "kubernetes_namespace_v1" "monitoring" {
  metadata {
    name = "monitoring"
  }
}

# Retain: deleting the chart (or the PVC by mistake) does not delete the TSDB with it.
resource "kubernetes_storage_class_v1" "gp3_encrypted" {
  metadata {
    name = "gp3-encrypted"
  }
  storage_provisioner    = "ebs.csi.aws.com"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  reclaim_policy         = "Retain"
  parameters = {
    type      = "gp3"
    encrypted = "true"
    kmsKeyId  = aws_kms_key.ebs.arn
  }
}

resource "aws_sns_topic" "alerts" {
  name = "${var.name}-alerts"
  # The AWS-managed SNS key: principals of the account may publish through SNS without a grant
  # of ours, and email delivery needs none.
  kms_master_key_id = "alias/aws/sns"
}

resource "aws_sns_topic_subscription" "alert_email" {
  for_each  = toset(var.alert_email_addresses)
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = each.value
}

data "aws_iam_policy_document" "alertmanager_sns" {
  statement {
    sid       = "PublishAlerts"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }
}

resource "aws_iam_policy" "alertmanager_sns" {
  name_prefix = "${var.name}-alertmanager-"
  description = "Publish alerts to the platform's SNS topic (Alertmanager, IRSA)"
  policy      = data.aws_iam_policy_document.alertmanager_sns.json
}

module "alertmanager_irsa" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version (version = below); a git commit source would bypass the registry resolution that terraform init verifies and that update tooling follows
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "5.44.0"

  role_name_prefix = "${var.name}-alertmanager-"
  role_policy_arns = { sns = aws_iam_policy.alertmanager_sns.arn }
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["monitoring:kube-prometheus-stack-alertmanager"]
    }
  }
}

resource "kubernetes_secret_v1" "alertmanager_receivers" {
  count = local.slack_enabled ? 1 : 0
  metadata {
    name      = "alertmanager-receivers"
    namespace = kubernetes_namespace_v1.monitoring.metadata[0].name
  }
  data = { "slack-webhook-url" = var.alert_slack_webhook_url }
}

locals {
  slack_enabled = nonsensitive(var.alert_slack_webhook_url != null)
  # kube-prometheus-stack mounts each of alertmanagerSpec.secrets at /etc/alertmanager/secrets/<name>/.
  alertmanager_secrets = local.slack_enabled ? ["alertmanager-receivers"] : []
  alertmanager_config = yamldecode(templatefile("${path.module}/alertmanager.yaml.tftpl", {
    sns_topic_arn      = aws_sns_topic.alerts.arn
    region             = var.region
    slack_api_url_file = local.slack_enabled ? "/etc/alertmanager/secrets/alertmanager-receivers/slack-webhook-url" : ""
  }))
}

resource "helm_release" "kube_prometheus_stack" {
  name       = "kube-prometheus-stack"
  namespace  = kubernetes_namespace_v1.monitoring.metadata[0].name
  repository = "https://prometheus-community.github.io/helm-charts"
  chart      = "kube-prometheus-stack"
  version    = "65.1.1"
  values = [yamlencode({
    prometheus = {
      prometheusSpec = {
        # Pick up the platform's ServiceMonitors, PodMonitors and PrometheusRule in any namespace
        # (with the chart's defaults only those labelled release=kube-prometheus-stack count).
        serviceMonitorSelectorNilUsesHelmValues = false
        podMonitorSelectorNilUsesHelmValues     = false
        ruleSelectorNilUsesHelmValues           = false
        # 15 days or 45 GB, whichever comes first: the volume (50 GiB = 53.7 GB) never fills.
        retention     = "15d"
        retentionSize = "45GB"
        storageSpec = {
          volumeClaimTemplate = {
            spec = {
              storageClassName = kubernetes_storage_class_v1.gp3_encrypted.metadata[0].name
              accessModes      = ["ReadWriteOnce"]
              resources        = { requests = { storage = "50Gi" } }
            }
          }
        }
      }
    }
    alertmanager = {
      serviceAccount = { annotations = { "eks.amazonaws.com/role-arn" = module.alertmanager_irsa.iam_role_arn } }
      config         = local.alertmanager_config
      alertmanagerSpec = {
        secrets = local.alertmanager_secrets
        # Silences and the notification log survive a restart.
        storage = {
          volumeClaimTemplate = {
            spec = {
              storageClassName = kubernetes_storage_class_v1.gp3_encrypted.metadata[0].name
              accessModes      = ["ReadWriteOnce"]
              resources        = { requests = { storage = "2Gi" } }
            }
          }
        }
      }
    }
    grafana = {
      sidecar = { dashboards = { enabled = true, label = "grafana_dashboard", searchNamespace = "ALL", folderAnnotation = "grafana_folder" } }
    }
  })]
  # Not the chart's well-known default ("prom-operator"): a random password, kept in the chart's
  # Secret kube-prometheus-stack-grafana (`make open-grafana` says how to read it).
  set_sensitive {
    name  = "grafana.adminPassword"
    value = random_password.grafana_admin.result
  }
  # The receivers' Secret exists before Alertmanager mounts it.
  depends_on = [kubernetes_secret_v1.alertmanager_receivers]
}

resource "random_password" "grafana_admin" {
  length  = 32
  special = false
}
