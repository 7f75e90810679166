// Validates Kubernetes objects (a JSON array on stdin) against the API schemas that the npm
// packages kubernetes-models (core/apps/policy/autoscaling/networking, from the Kubernetes
// OpenAPI document) and @kubernetes-models/prometheus-operator (ServiceMonitor CRD) ship.
// Prints one line per object ("ok KIND NAME" or "invalid KIND NAME: errors"); exit 1 if any
// object is invalid or of a kind with no schema here.
"use strict";

function modelFor(apiVersion, kind) {
  const pkg = apiVersion.startsWith("monitoring.coreos.com/")
    ? "@kubernetes-models/prometheus-operator"
    : "kubernetes-models";
  const mod = require(`${pkg}/${apiVersion}/${kind}`);
  if (!mod[kind]) throw new Error(`no model ${kind} in ${pkg}/${apiVersion}`);
  return mod[kind];
}

const objects = JSON.parse(require("fs").readFileSync(0, "utf8"));
let bad = 0;
for (const obj of objects) {
  const what = `${obj.apiVersion} ${obj.kind} ${obj.metadata && obj.metadata.name}`;
  try {
    const Model = modelFor(obj.apiVersion, obj.kind);
    new Model(obj).validate();
    console.log(`ok ${what}`);
  } catch (e) {
    bad++;
    console.log(`invalid ${what}: ${String(e.message).replace(/\n/g, " ")}`);
  }
}
process.exit(bad ? 1 : 0);
