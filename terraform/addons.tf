# Cluster add-ons the manifests in k8s/ rely on, pinned chart versions. Installed here (not by
# kustomize) because they are cluster-wide and need the roles created above.

resource "helm_release" "karpenter" {
  name       = "karpenter"
  namespace  = "kube-system"
  repository = "oci://public.ecr.aws/karpenter"
  chart      = "karpenter"
  version    = "1.0.6"
  values = [yamlencode({
    settings = {
      clusterName       = module.eks.cluster_name
      clusterEndpoint   = module.eks.cluster_endpoint
      interruptionQueue = module.karpenter.queue_name
    }
    serviceAccount = { name = module.karpenter.service_account }
    # On the system node group, never on the nodes it manages.
    nodeSelector = { "inference.platform/role" = "system" }
  })]
}

resource "helm_release" "aws_load_balancer_controller" {
  name       = "aws-load-balancer-controller"
  namespace  = "kube-system"
  repository = "https://aws.github.io/eks-charts"
  chart      = "aws-load-balancer-controller"
  version    = "1.9.2"
  values = [yamlencode({
    clusterName = module.eks.cluster_name
    vpcId       = module.vpc.vpc_id
    region      = var.region
    serviceAccount = {
      name        = "aws-load-balancer-controller"
      annotations = { "eks.amazonaws.com/role-arn" = module.load_balancer_controller_irsa.iam_role_arn }
    }
  })]
}

resource "helm_release" "keda" {
  name             = "keda"
  namespace        = "keda"
  create_namespace = true
  repository       = "https://kedacore.github.io/charts"
  chart            = "keda"
  version          = "2.15.1"
}

resource "helm_release" "istio_base" {
  name             = "istio-base"
  namespace        = "istio-system"
  create_namespace = true
  repository       = "https://istio-release.storage.googleapis.com/charts"
  chart            = "base"
  version          = "1.23.2"
}

resource "helm_release" "istio_cni" {
  name       = "istio-cni"
  namespace  = "istio-system"
  repository = "https://istio-release.storage.googleapis.com/charts"
  chart      = "cni"
  version    = "1.23.2"
  depends_on = [helm_release.istio_base]
}

resource "helm_release" "istiod" {
  name       = "istiod"
  namespace  = "istio-system"
  repository = "https://istio-release.storage.googleapis.com/charts"
  chart      = "istiod"
  version    = "1.23.2"
  # istio-cni sets up the pod network, so sidecars need no NET_ADMIN init container and the
  # namespace can enforce the baseline Pod Security Standard (k8s/base/namespace.yaml).
  values     = [yamlencode({ pilot = { cni = { enabled = true } } })]
  depends_on = [helm_release.istio_cni]
}

resource "helm_release" "nvidia_device_plugin" {
  name             = "nvidia-device-plugin"
  namespace        = "nvidia-device-plugin"
  create_namespace = true
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = "0.16.2"
  # The chart's default node affinity needs nvidia.com/gpu.present=true (or NFD/GFD labels); the
  # GPU NodePool sets that label on its nodes (k8s/base/karpenter/nodepools.yaml), and this
  # nodeSelector keeps the plugin off every other node. Checked offline against the chart's
  # documented defaults in tests/deploy/test_eks_blockers.py.
  values = [yamlencode({
    tolerations  = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
    nodeSelector = { "inference.platform/pool" = "gpu" }
  })]
}

resource "helm_release" "neuron_device_plugin" {
  name             = "neuron-device-plugin"
  namespace        = "neuron"
  create_namespace = true
  repository       = "oci://public.ecr.aws/neuron"
  chart            = "neuron-helm-chart"
  version          = "1.1.1"
  values = [yamlencode({
    npd = { enabled = false }
    devicePlugin = {
      tolerations = [{ key = "aws.amazon.com/neuron", operator = "Exists", effect = "NoSchedule" }]
    }
  })]
}
