// Validates the Prometheus Operator resources (ServiceMonitor,
// PrometheusRule) in the given files against the CRD schemas published in
// @kubernetes-models/prometheus-operator. Exit 1 on the first invalid one.
import fs from "node:fs";
import * as yaml from "js-yaml";
import { ServiceMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = { ServiceMonitor, PrometheusRule };
let failed = false;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    const Kind = doc && kinds[doc.kind];
    if (!Kind) continue;
    checked += 1;
    try {
      new Kind(doc).validate();
      console.log(`ok ${file}: ${doc.kind}/${doc.metadata.name}`);
    } catch (error) {
      failed = true;
      console.error(`FAILED ${file}: ${doc.kind}/${doc.metadata.name}: ${error.message}`);
    }
  }
}
if (checked === 0) {
  console.error("no ServiceMonitor or PrometheusRule found");
  failed = true;
}
process.exit(failed ? 1 : 0);
