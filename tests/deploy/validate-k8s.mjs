// Validates every object of a multi-document YAML file against the schemas
// shipped by the npm packages kubernetes-models (core API) and
// @kubernetes-models/prometheus-operator (ServiceMonitor, PrometheusRule, ...).
// Offline: the schemas are compiled into the packages.
//   node validate-k8s.mjs rendered.yaml
// Exit status 1 on any invalid object or any kind without a schema.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const file = process.argv[2];
if (!file) {
  console.error("usage: node validate-k8s.mjs FILE.yaml");
  process.exit(2);
}

function modulePath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  }
  return group === "" ? `kubernetes-models/${version}/${kind}` : `kubernetes-models/${group}/${version}/${kind}`;
}

let failed = 0;
let checked = 0;
for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
  if (doc.errors.length) {
    console.log(`FAIL: YAML error: ${doc.errors[0].message}`);
    failed++;
    continue;
  }
  const obj = doc.toJS();
  if (obj == null) continue;
  const id = `${obj.kind}/${obj.metadata?.name} (${obj.apiVersion})`;
  let Model;
  try {
    const mod = await import(modulePath(obj.apiVersion, obj.kind));
    Model = mod[obj.kind];
  } catch (e) {
    console.log(`FAIL: ${id}: no schema (${e.code ?? e.message})`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`ok:   ${id}`);
    checked++;
  } catch (e) {
    console.log(`FAIL: ${id}: ${e.message}`);
    failed++;
  }
}
console.log(`validate-k8s: ${checked} valid, ${failed} invalid`);
process.exit(failed ? 1 : 0);
