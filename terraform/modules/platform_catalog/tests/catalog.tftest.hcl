# terraform test (offline: the module needs no provider).

variables {
  name = "inference-platform"
  pools = {
    cpu  = { accelerator = "cpu", instance_types = ["c7g.xlarge", "c7g.2xlarge"] }
    gpu  = { accelerator = "gpu", instance_types = ["g5.xlarge"] }
    inf2 = { accelerator = "inferentia", instance_types = ["inf2.xlarge"] }
  }
}

run "names_every_image_once" {
  command = plan
  assert {
    condition = output.ecr_repository_names == [
      "inference-platform/triton-cpu", "inference-platform/triton-gpu", "inference-platform/triton-inferentia",
      "inference-platform/xds-control", "inference-platform/envoy-gateway",
    ]
    error_message = "unexpected repositories: ${jsonencode(output.ecr_repository_names)}"
  }
  assert {
    condition     = output.karpenter_nodepools == { cpu = "triton-cpu", gpu = "triton-gpu", inf2 = "triton-inferentia" }
    error_message = "NodePool names must match k8s/base/karpenter/nodepools.yaml"
  }
  assert {
    condition     = output.triton_service_account == "inference:triton"
    error_message = "IRSA subject must be the triton ServiceAccount in the inference namespace"
  }
}

run "rejects_an_instance_type_of_another_accelerator" {
  command = plan
  variables {
    pools = { gpu = { accelerator = "gpu", instance_types = ["c7g.xlarge"] } }
  }
  expect_failures = [var.pools]
}

run "rejects_an_unknown_accelerator" {
  command = plan
  variables {
    pools = { tpu = { accelerator = "tpu", instance_types = ["v5e"] } }
  }
  expect_failures = [var.pools]
}

run "rejects_a_bad_name" {
  command = plan
  variables {
    name = "Inference_Platform"
  }
  expect_failures = [var.name]
}
