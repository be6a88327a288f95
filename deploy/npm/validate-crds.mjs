// Validates every custom resource in rendered manifests against the schema of its real CRD.
//
// kubernetes-validate --strict checks core kinds but only warns on CRDs; the @kubernetes-models/*
// packages are generated from the upstream CRDs (KEDA, Karpenter, Istio, prometheus-operator) and
// validate offline. Usage: node validate-crds.mjs rendered.yaml [...]
// Exit 0 when every custom resource validates; 1 with one line per error otherwise; 2 when a
// document has an API group that no package here covers (so a new CRD kind cannot slip through).
import { readFileSync } from "node:fs";
import yaml from "js-yaml";

const PACKAGE_BY_GROUP = {
  "keda.sh": "keda",
  "karpenter.sh": "karpenter",
  "karpenter.k8s.aws": "karpenter",
  "security.istio.io": "istio",
  "networking.istio.io": "istio",
  "telemetry.istio.io": "istio",
  "monitoring.coreos.com": "prometheus-operator",
};

// API groups whose kinds kubernetes-validate checks (built into Kubernetes).
const CORE_GROUPS = new Set([
  "", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
  "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "node.k8s.io",
]);

let failures = 0;
let unknown = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!doc || !doc.apiVersion) continue;
    const [group, version] = doc.apiVersion.includes("/") ? doc.apiVersion.split("/") : ["", doc.apiVersion];
    if (CORE_GROUPS.has(group)) continue;
    const where = `${file}: ${doc.kind}/${doc.metadata?.name}`;
    const pkg = PACKAGE_BY_GROUP[group];
    if (!pkg) {
      console.error(`${where}: no CRD schema package for API group '${group}'`);
      unknown += 1;
      continue;
    }
    const mod = await import(`@kubernetes-models/${pkg}/${group}/${version}`);
    const Model = mod[doc.kind];
    if (!Model) {
      console.error(`${where}: kind ${doc.kind} not in @kubernetes-models/${pkg} ${group}/${version}`);
      unknown += 1;
      continue;
    }
    checked += 1;
    try {
      new Model(doc).validate();
    } catch (err) {
      failures += 1;
      const details = (err.errors || []).map((e) => `${e.instancePath || "/"} ${e.message}`).join("; ");
      console.error(`${where}: ${details || err.message}`);
    }
  }
}
console.log(`custom resources checked: ${checked}, invalid: ${failures}, unknown kinds: ${unknown}`);
process.exit(unknown ? 2 : failures ? 1 : 0);
