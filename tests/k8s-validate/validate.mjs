// Offline validation of Kubernetes manifests, for tests/k8s-manifests.sh.
//
//   node validate.mjs [--modules DIR] FILE...
//
// Every YAML document of every FILE must be one of the kinds below, and:
//  - built-in kinds validate against the Kubernetes OpenAPI schemas compiled
//    into the npm package kubernetes-models (types, required fields, enums);
//  - VolumeSnapshot, VolumeSnapshotClass (snapshot.storage.k8s.io/v1) and
//    SnapshotMetadataService (cbt.storage.k8s.io/v1beta1) validate against
//    small schemas written here from their CRDs (required fields, allowed
//    keys, types);
//  - on top: unknown keys at the levels where typos hide (top level,
//    metadata, the specs used here, pod specs, containers), names and
//    labels, namespaced vs cluster-scoped, leftover ${PLACEHOLDERS}, image
//    tags, volumes that containers use, $(VAR) in command/args, selectors;
//  - references between the documents (Secrets, ServiceAccounts, PVCs,
//    classes, roles) resolve within the files given;
//  - project policy: the ClusterRole cbtfs-snapshot-metadata-client grants
//    exactly what the snapshot-metadata client needs.
// An unknown kind is an error.  Prints one line per problem; exit 0 if none,
// 1 if any, 2 if it cannot run.
//
// With --extract-scripts DIR, the shell scripts that containers run (command
// [sh|bash, -c], script in args) are written to DIR as NAME.sh or NAME.bash,
// for bash -n and shellcheck.
//
// The npm modules live outside the source tree: DIR/node_modules, with DIR
// from --modules, $CBTFS_NODE_PREFIX or /var/cache/cbtfs-node (a node_modules
// directory on $NODE_PATH works too).  scripts/install-deps.sh puts them there.

import { createRequire } from "node:module";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

// ---------------------------------------------------------------------------
// modules

function findModules(explicit) {
  const candidates = [];
  if (explicit) candidates.push(path.join(explicit, "node_modules"), explicit);
  if (process.env.CBTFS_NODE_PREFIX)
    candidates.push(path.join(process.env.CBTFS_NODE_PREFIX, "node_modules"));
  for (const p of (process.env.NODE_PATH || "").split(path.delimiter))
    if (p) candidates.push(p);
  candidates.push("/var/cache/cbtfs-node/node_modules");
  for (const dir of candidates)
    if (existsSync(path.join(dir, "kubernetes-models", "package.json")) &&
        existsSync(path.join(dir, "yaml", "package.json")))
      return dir;
  return null;
}

const args = process.argv.slice(2);
let modulesArg = null;
let scriptsDir = null;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--modules") modulesArg = args[++i];
  else if (args[i] === "--extract-scripts") scriptsDir = args[++i];
  else if (args[i] === "-h" || args[i] === "--help") {
    console.log("usage: node validate.mjs [--modules DIR] [--extract-scripts DIR] FILE...");
    process.exit(0);
  } else files.push(args[i]);
}
if (files.length === 0) {
  console.error("usage: node validate.mjs [--modules DIR] [--extract-scripts DIR] FILE...");
  process.exit(2);
}
const modules = findModules(modulesArg);
if (!modules) {
  console.error("validate.mjs: kubernetes-models and yaml are not installed " +
    "(run scripts/install-deps.sh, or give --modules DIR)");
  process.exit(2);
}
const require = createRequire(path.join(path.dirname(modules), "validate.cjs"));
const YAML = require("yaml");
const core = require("kubernetes-models/v1");
const apps = require("kubernetes-models/apps/v1");
const batch = require("kubernetes-models/batch/v1");
const rbac = require("kubernetes-models/rbac.authorization.k8s.io/v1");
const storage = require("kubernetes-models/storage.k8s.io/v1");
const { ObjectMeta } = require("@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta");

// ---------------------------------------------------------------------------
// what may appear

const META_KEYS = ["name", "generateName", "namespace", "labels", "annotations",
  "finalizers", "ownerReferences"];
const POD_SPEC_KEYS = ["volumes", "initContainers", "containers",
  "ephemeralContainers", "restartPolicy", "terminationGracePeriodSeconds",
  "activeDeadlineSeconds", "dnsPolicy", "nodeSelector", "serviceAccountName",
  "serviceAccount", "automountServiceAccountToken", "nodeName", "hostNetwork",
  "hostPID", "hostIPC", "shareProcessNamespace", "securityContext",
  "imagePullSecrets", "hostname", "subdomain", "affinity", "schedulerName",
  "tolerations", "hostAliases", "priorityClassName", "priority", "dnsConfig",
  "readinessGates", "runtimeClassName", "enableServiceLinks",
  "preemptionPolicy", "overhead", "topologySpreadConstraints",
  "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates", "resourceClaims",
  "resources"];
const CONTAINER_KEYS = ["name", "image", "command", "args", "workingDir", "ports",
  "envFrom", "env", "resources", "resizePolicy", "restartPolicy",
  "volumeMounts", "volumeDevices", "livenessProbe", "readinessProbe",
  "startupProbe", "lifecycle", "terminationMessagePath",
  "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin",
  "stdinOnce", "tty"];
const WORKLOAD = ["apiVersion", "kind", "metadata", "spec"];

// apiVersion/kind -> how to check it
const KINDS = {
  "v1/Namespace": { model: core.Namespace, namespaced: false, top: WORKLOAD, label: true },
  "v1/Service": { model: core.Service, namespaced: true, top: WORKLOAD, label: true,
    spec: ["ports", "selector", "clusterIP", "clusterIPs", "type", "externalIPs",
      "sessionAffinity", "loadBalancerIP", "loadBalancerSourceRanges",
      "externalName", "externalTrafficPolicy", "healthCheckNodePort",
      "publishNotReadyAddresses", "sessionAffinityConfig", "ipFamilies",
      "ipFamilyPolicy", "allocateLoadBalancerNodePorts", "loadBalancerClass",
      "internalTrafficPolicy", "trafficDistribution"] },
  "v1/PersistentVolumeClaim": { model: core.PersistentVolumeClaim, namespaced: true,
    top: WORKLOAD, spec: ["accessModes", "selector", "resources", "volumeName",
      "storageClassName", "volumeMode", "dataSource", "dataSourceRef",
      "volumeAttributesClassName"] },
  "v1/Secret": { model: core.Secret, namespaced: true,
    top: ["apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"] },
  "v1/ConfigMap": { model: core.ConfigMap, namespaced: true,
    top: ["apiVersion", "kind", "metadata", "data", "binaryData", "immutable"] },
  "v1/ServiceAccount": { model: core.ServiceAccount, namespaced: true,
    top: ["apiVersion", "kind", "metadata", "secrets", "imagePullSecrets",
      "automountServiceAccountToken"] },
  "v1/Pod": { model: core.Pod, namespaced: true, top: WORKLOAD, spec: POD_SPEC_KEYS },
  "apps/v1/Deployment": { model: apps.Deployment, namespaced: true, top: WORKLOAD,
    spec: ["replicas", "selector", "template", "strategy", "minReadySeconds",
      "revisionHistoryLimit", "paused", "progressDeadlineSeconds"] },
  "batch/v1/Job": { model: batch.Job, namespaced: true, top: WORKLOAD, label: true,
    spec: ["parallelism", "completions", "activeDeadlineSeconds",
      "podFailurePolicy", "successPolicy", "backoffLimit",
      "backoffLimitPerIndex", "maxFailedIndexes", "selector", "manualSelector",
      "template", "ttlSecondsAfterFinished", "completionMode", "suspend",
      "podReplacementPolicy", "managedBy"] },
  "batch/v1/CronJob": { model: batch.CronJob, namespaced: true, top: WORKLOAD, label: true,
    spec: ["schedule", "timeZone", "startingDeadlineSeconds", "concurrencyPolicy",
      "suspend", "jobTemplate", "successfulJobsHistoryLimit",
      "failedJobsHistoryLimit"] },
  "rbac.authorization.k8s.io/v1/ClusterRole": { model: rbac.ClusterRole,
    namespaced: false, rbacName: true,
    top: ["apiVersion", "kind", "metadata", "rules", "aggregationRule"] },
  "rbac.authorization.k8s.io/v1/Role": { model: rbac.Role, namespaced: true,
    rbacName: true, top: ["apiVersion", "kind", "metadata", "rules"] },
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": { model: rbac.ClusterRoleBinding,
    namespaced: false, rbacName: true,
    top: ["apiVersion", "kind", "metadata", "roleRef", "subjects"] },
  "rbac.authorization.k8s.io/v1/RoleBinding": { model: rbac.RoleBinding,
    namespaced: true, rbacName: true,
    top: ["apiVersion", "kind", "metadata", "roleRef", "subjects"] },
  "storage.k8s.io/v1/StorageClass": { model: storage.StorageClass, namespaced: false,
    top: ["apiVersion", "kind", "metadata", "provisioner", "parameters",
      "reclaimPolicy", "mountOptions", "allowVolumeExpansion",
      "volumeBindingMode", "allowedTopologies"] },
  // custom resources: schemas below
  "snapshot.storage.k8s.io/v1/VolumeSnapshot": { crd: "VolumeSnapshot", namespaced: true },
  "snapshot.storage.k8s.io/v1/VolumeSnapshotClass": { crd: "VolumeSnapshotClass", namespaced: false },
  "cbt.storage.k8s.io/v1beta1/SnapshotMetadataService": { crd: "SnapshotMetadataService", namespaced: false },
};

// Tiny schemas of the custom resources, from their CRDs:
// external-snapshotter (snapshot.storage.k8s.io_volumesnapshots.yaml,
// ..._volumesnapshotclasses.yaml) and external-snapshot-metadata v1.0
// (cbt.storage.k8s.io_snapshotmetadataservices.yaml, version v1beta1).
const str = { type: "string", nonEmpty: true };
const CRD = {
  VolumeSnapshot: {
    type: "object", required: ["apiVersion", "kind", "metadata", "spec"],
    props: {
      apiVersion: str, kind: str, metadata: { type: "meta" },
      spec: {
        type: "object", required: ["source"],
        props: {
          volumeSnapshotClassName: str,
          source: {
            type: "object", exactlyOne: ["persistentVolumeClaimName", "volumeSnapshotContentName"],
            props: { persistentVolumeClaimName: str, volumeSnapshotContentName: str },
          },
        },
      },
    },
  },
  VolumeSnapshotClass: {
    type: "object", required: ["apiVersion", "kind", "metadata", "driver", "deletionPolicy"],
    props: {
      apiVersion: str, kind: str, metadata: { type: "meta" },
      driver: str,
      deletionPolicy: { type: "string", enum: ["Delete", "Retain"] },
      parameters: { type: "map", values: { type: "string" } },
    },
  },
  SnapshotMetadataService: {
    type: "object", required: ["apiVersion", "kind", "metadata", "spec"],
    props: {
      apiVersion: str, kind: str, metadata: { type: "meta" },
      spec: {
        type: "object", required: ["address", "audience", "caCert"],
        props: {
          address: { type: "string", pattern: /^[A-Za-z0-9.-]+:[0-9]{1,5}$/,
            patternText: "HOST:PORT" },
          audience: str,
          caCert: { type: "string", format: "pem-base64" },
        },
      },
    },
  },
};

// ---------------------------------------------------------------------------
// checks

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function checkSchema(schema, v, where, err) {
  const at = where || "(document)";
  switch (schema.type) {
    case "string":
      if (typeof v !== "string") return err(`${at} must be a string`);
      if (schema.nonEmpty && v === "") return err(`${at} must not be empty`);
      if (schema.enum && !schema.enum.includes(v))
        return err(`${at} must be one of ${schema.enum.join(", ")}`);
      if (schema.pattern && !schema.pattern.test(v))
        return err(`${at} must look like ${schema.patternText}`);
      if (schema.format === "pem-base64") {
        if (!/^[A-Za-z0-9+/]+={0,2}$/.test(v) || v.length % 4 !== 0)
          return err(`${at} must be base64 (format: byte)`);
        if (!Buffer.from(v, "base64").toString("latin1").includes("-----BEGIN CERTIFICATE-----"))
          return err(`${at} must be the base64 of a PEM certificate`);
      }
      return;
    case "map":
      if (!isObj(v)) return err(`${at} must be a map`);
      for (const [k, x] of Object.entries(v)) checkSchema(schema.values, x, `${where}.${k}`, err);
      return;
    case "meta":
      if (!isObj(v)) return err(`${at} must be a map`);
      return;
    case "object": {
      if (!isObj(v)) return err(`${at} must be a map`);
      for (const r of schema.required || [])
        if (v[r] === undefined || v[r] === null) err(`${where ? where + "." : ""}${r} is required`);
      for (const [k, x] of Object.entries(v)) {
        const sub = schema.props[k];
        if (!sub) err(`${where ? where + "." : ""}${k} is not a field of this kind`);
        else if (x !== undefined && x !== null) checkSchema(sub, x, `${where ? where + "." : ""}${k}`, err);
      }
      if (schema.exactlyOne) {
        const n = schema.exactlyOne.filter((k) => v[k] !== undefined && v[k] !== null).length;
        if (n !== 1) err(`${at} needs exactly one of ${schema.exactlyOne.join(", ")}`);
      }
      return;
    }
  }
}

function allowedKeys(obj, keys, where, err) {
  if (!isObj(obj)) return;
  for (const k of Object.keys(obj))
    if (!keys.includes(k)) err(`${where}${k} is not a field here`);
}

function walkStrings(v, where, fn) {
  if (typeof v === "string") fn(v, where);
  else if (Array.isArray(v)) v.forEach((x, i) => walkStrings(x, `${where}[${i}]`, fn));
  else if (isObj(v)) for (const [k, x] of Object.entries(v)) walkStrings(x, where ? `${where}.${k}` : k, fn);
}

function checkLabels(labels, where, err) {
  if (!isObj(labels)) return;
  for (const [k, v] of Object.entries(labels)) {
    const [prefix, name] = k.includes("/") ? k.split("/", 2) : [null, k];
    if ((prefix !== null && !DNS_SUBDOMAIN.test(prefix)) || !LABEL_NAME.test(name) || name.length > 63)
      err(`${where} key '${k}' is not a valid label name`);
    if (typeof v !== "string" || v.length > 63 || !LABEL_VALUE.test(v))
      err(`${where}.${k}: '${v}' is not a valid label value`);
  }
}

// A pod template (or pod) spec, for problems a schema does not see.
function checkPodSpec(spec, where, refs, ns, err, doc) {
  const ref = (kind, name, w) => refs.push([kind, ns, name, `${doc} ${w}`]);
  if (!isObj(spec)) return;
  allowedKeys(spec, POD_SPEC_KEYS, `${where}.`, err);
  const volumes = new Map();
  for (const v of spec.volumes || []) {
    if (!isObj(v)) continue;
    if (volumes.has(v.name)) err(`${where}.volumes: '${v.name}' is defined twice`);
    volumes.set(v.name, v);
    if (v.persistentVolumeClaim) ref("PersistentVolumeClaim", v.persistentVolumeClaim.claimName, `${where}.volumes[${v.name}]`);
    if (v.secret) ref("Secret", v.secret.secretName, `${where}.volumes[${v.name}]`);
  }
  if (spec.serviceAccountName && spec.serviceAccountName !== "default")
    ref("ServiceAccount", spec.serviceAccountName, `${where}.serviceAccountName`);
  const used = new Set();
  const names = new Set();
  for (const [i, c] of [...(spec.initContainers || []), ...(spec.containers || [])].entries()) {
    if (!isObj(c)) continue;
    const cw = `${where}.containers[${c.name ?? i}]`;
    allowedKeys(c, CONTAINER_KEYS, `${cw}.`, err);
    if (names.has(c.name)) err(`${cw}: container name used twice`);
    names.add(c.name);
    if (typeof c.image === "string") {
      const ref = c.image.replace(/^[^/]+\.[^/]+\//, ""); // drop a registry host:port
      if (!c.image.includes("@") && !/:[^/]+$/.test(ref))
        err(`${cw}.image '${c.image}' has no tag: pin a version`);
      else if (/:latest$/.test(c.image)) err(`${cw}.image '${c.image}': pin a version, not latest`);
    }
    const env = new Set();
    for (const e of c.env || []) {
      if (!isObj(e)) continue;
      if (env.has(e.name)) err(`${cw}.env: '${e.name}' is set twice`);
      env.add(e.name);
      const sk = e.valueFrom?.secretKeyRef;
      if (sk) ref("Secret", sk.name, `${cw}.env[${e.name}]`);
    }
    for (const e of c.envFrom || []) if (e?.secretRef) ref("Secret", e.secretRef.name, `${cw}.envFrom`);
    // the kubelet expands $(VAR) of the container's variables and turns $$
    // into $ in command and args: a shell script there must use $VAR
    for (const key of ["command", "args"])
      walkStrings(c[key], `${cw}.${key}`, (s, w) => {
        if (s.includes("$$")) err(`${w} contains '$$', which the kubelet turns into '$'`);
        for (const m of s.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g))
          if (env.has(m[1])) err(`${w}: the kubelet expands $(${m[1]}) before the shell sees it`);
      });
    const cmd = Array.isArray(c.command) ? c.command : [];
    const shell = cmd.length === 2 && /^(\/bin\/)?(sh|bash)$/.exec(cmd[0]);
    if (shell && /^-e?c$/.test(cmd[1]) && Array.isArray(c.args) && typeof c.args[0] === "string")
      scripts.push([`${doc} ${cw}`, shell[2], c.args[0]]);
    const paths = new Set();
    for (const [k, pathKey] of [["volumeMounts", "mountPath"], ["volumeDevices", "devicePath"]]) {
      for (const m of c[k] || []) {
        if (!isObj(m)) continue;
        const vol = volumes.get(m.name);
        if (!vol) { err(`${cw}.${k}: no volume '${m.name}' in the pod`); continue; }
        used.add(m.name);
        if (typeof m[pathKey] === "string" && !m[pathKey].startsWith("/"))
          err(`${cw}.${k}[${m.name}].${pathKey} must be an absolute path`);
        if (paths.has(m[pathKey])) err(`${cw}.${k}: ${m[pathKey]} is used twice`);
        paths.add(m[pathKey]);
        if (k === "volumeDevices" && !vol.persistentVolumeClaim && !vol.ephemeral)
          err(`${cw}.volumeDevices[${m.name}]: a raw device needs a PVC volume`);
      }
    }
  }
  for (const name of volumes.keys())
    if (!used.has(name)) err(`${where}.volumes: '${name}' is not used by any container`);
}

// ---------------------------------------------------------------------------
// one document

const defined = new Map(); // "Kind/ns/name" -> where
const refs = [];            // [Kind, ns, name, where]
const templates = [];       // [labels of pod templates, ns]
const services = [];        // [selector, ns, where]
const clusterRoles = [];    // [name, rules, where]
const scripts = [];         // [where, shell, text]
let problems = 0;

function checkDocument(doc, where) {
  const err = (msg) => { problems++; console.log(`${where}: ${msg}`); };
  if (!isObj(doc)) return err("is not a map (a Kubernetes object)");
  const { apiVersion, kind, metadata } = doc;
  const id = `${apiVersion}/${kind}`;
  // kustomize's own file, not an object of the API (tests/k8s-manifests.sh
  // checks what it lists)
  if (id === "kustomize.config.k8s.io/v1beta1/Kustomization") return;
  const k = KINDS[id];
  if (!k) return err(`unknown kind '${kind}' of apiVersion '${apiVersion}'`);
  const name = metadata?.name;
  where = `${where} (${kind} ${name ?? "?"})`;

  walkStrings(doc, "", (s, w) => {
    const m = s.match(/\$\{[A-Za-z_][A-Za-z0-9_]*\}/);
    if (m) err(`${w}: unrendered placeholder ${m[0]}`);
  });

  // schema
  if (k.model) {
    try {
      new k.model(doc).validate();
    } catch (e) {
      for (const x of e.errors || [{ instancePath: "", message: e.message }])
        err(`${x.instancePath.slice(1).replace(/\//g, ".") || "(document)"} ${x.message}` +
          (x.params?.allowedValues ? `: ${x.params.allowedValues.join(", ")}` : ""));
    }
    allowedKeys(doc, k.top, "", err);
    if (k.spec) allowedKeys(doc.spec, k.spec, "spec.", err);
  } else {
    checkSchema(CRD[k.crd], doc, "", err);
  }
  if (!isObj(metadata)) return err("metadata is required");
  try {
    new ObjectMeta(metadata).validate();
  } catch (e) {
    err(`metadata: ${e.message}`);
  }
  allowedKeys(metadata, META_KEYS, "metadata.", err);

  // names, labels, scope
  if (typeof name !== "string") err("metadata.name is required");
  else if (k.rbacName ? /[/%]/.test(name) || name === "." || name === ".."
    : !(k.label ? DNS_LABEL : DNS_SUBDOMAIN).test(name) || name.length > (k.label ? 63 : 253))
    err(`metadata.name '${name}' is not a valid ${k.label ? "DNS label" : "name"}`);
  checkLabels(metadata.labels, "metadata.labels", err);
  const ns = metadata.namespace;
  if (k.namespaced && !ns) err("metadata.namespace is missing (kubectl apply would use the current one)");
  if (!k.namespaced && ns !== undefined) err("metadata.namespace set on a cluster-scoped kind");
  const key = `${kind}/${k.namespaced ? ns : ""}/${name}`;
  if (defined.has(key)) err(`defined twice (also ${defined.get(key)})`);
  defined.set(key, where);

  // kind-specific
  const spec = doc.spec;
  const podTemplate = (tmpl, w) => {
    if (!isObj(tmpl)) return;
    checkLabels(tmpl.metadata?.labels, `${w}.metadata.labels`, err);
    templates.push([tmpl.metadata?.labels || {}, ns]);
    checkPodSpec(tmpl.spec, `${w}.spec`, refs, ns, err, where);
  };
  switch (kind) {
    case "Deployment": {
      podTemplate(spec?.template, "spec.template");
      const sel = spec?.selector?.matchLabels || {};
      const labels = spec?.template?.metadata?.labels || {};
      for (const [l, v] of Object.entries(sel))
        if (labels[l] !== v) err(`spec.selector ${l}=${v} does not select the pod template`);
      break;
    }
    case "Job": {
      podTemplate(spec?.template, "spec.template");
      const rp = spec?.template?.spec?.restartPolicy;
      if (rp !== "Never" && rp !== "OnFailure")
        err("spec.template.spec.restartPolicy must be Never or OnFailure");
      break;
    }
    case "CronJob": {
      const jt = spec?.jobTemplate?.spec;
      podTemplate(jt?.template, "spec.jobTemplate.spec.template");
      const rp = jt?.template?.spec?.restartPolicy;
      if (rp !== "Never" && rp !== "OnFailure")
        err("spec.jobTemplate.spec.template.spec.restartPolicy must be Never or OnFailure");
      break;
    }
    case "Pod":
      templates.push([metadata.labels || {}, ns]);
      checkPodSpec(spec, "spec", refs, ns, err, where);
      break;
    case "Service":
      if (spec?.type !== "ExternalName") {
        if (!isObj(spec?.selector) || Object.keys(spec.selector).length === 0)
          err("spec.selector is empty");
        else services.push([spec.selector, ns, where]);
      }
      break;
    case "PersistentVolumeClaim":
      if (spec?.storageClassName) refs.push(["StorageClass", "", spec.storageClassName, `${where} spec.storageClassName`]);
      if (spec?.dataSource?.kind === "VolumeSnapshot")
        refs.push(["VolumeSnapshot", ns, spec.dataSource.name, `${where} spec.dataSource`]);
      break;
    case "VolumeSnapshot":
      if (spec?.volumeSnapshotClassName)
        refs.push(["VolumeSnapshotClass", "", spec.volumeSnapshotClassName, `${where} spec.volumeSnapshotClassName`]);
      if (spec?.source?.persistentVolumeClaimName)
        refs.push(["PersistentVolumeClaim", ns, spec.source.persistentVolumeClaimName, `${where} spec.source`]);
      break;
    case "RoleBinding":
    case "ClusterRoleBinding": {
      const rk = doc.roleRef?.kind;
      if (kind === "ClusterRoleBinding" && rk !== "ClusterRole")
        err("roleRef.kind must be ClusterRole");
      if (rk === "Role" || rk === "ClusterRole")
        refs.push([rk, rk === "Role" ? ns : "", doc.roleRef.name, `${where} roleRef`]);
      for (const s of doc.subjects || []) {
        if (s?.kind !== "ServiceAccount") continue;
        if (!s.namespace) err(`subjects: ServiceAccount ${s.name} needs a namespace`);
        refs.push(["ServiceAccount", s.namespace, s.name, `${where} subjects`]);
      }
      break;
    }
    case "ClusterRole":
      clusterRoles.push([name, doc.rules, where]);
      break;
  }
}

// ---------------------------------------------------------------------------
// project policy: the rules of the snapshot-metadata client role (the
// upstream external-snapshot-metadata client ClusterRole), nothing more

const CLIENT_ROLE = "cbtfs-snapshot-metadata-client";
const CLIENT_RULES = [
  "snapshot.storage.k8s.io volumesnapshotcontents get,list,watch",
  "snapshot.storage.k8s.io volumesnapshots get,list,watch",
  "cbt.storage.k8s.io snapshotmetadataservices get,list",
  " serviceaccounts/token create,get",
];
function ruleSet(rules) {
  const out = new Set();
  for (const r of rules || [])
    for (const g of r.apiGroups || [])
      for (const res of r.resources || [])
        out.add(`${g} ${res} ${[...(r.verbs || [])].sort().join(",")}`);
  return out;
}

// ---------------------------------------------------------------------------
// main

let documents = 0;
for (const file of files) {
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    console.log(`${file}: ${e.message}`);
    problems++;
    continue;
  }
  const docs = YAML.parseAllDocuments(text, { prettyErrors: true });
  docs.forEach((d, i) => {
    const where = `${file}: document ${i + 1}`;
    if (d.errors.length) {
      for (const e of d.errors) { problems++; console.log(`${where}: YAML: ${e.message.split("\n")[0]}`); }
      return;
    }
    for (const w of d.warnings) console.log(`${where}: YAML warning: ${w.message.split("\n")[0]}`);
    const doc = d.toJS({ maxAliasCount: 0 });
    if (doc === null || doc === undefined) return; // an empty document
    documents++;
    checkDocument(doc, where);
  });
}

for (const [kind, ns, name, where] of refs) {
  if (typeof name !== "string") continue; // the schema has said so
  if (!defined.has(`${kind}/${ns ?? ""}/${name}`))
    { problems++; console.log(`${where}: refers to ${kind} ${ns ? ns + "/" : ""}${name}, which none of the files defines`); }
}
for (const [sel, ns, where] of services) {
  const ok = templates.some(([labels, tns]) => tns === ns &&
    Object.entries(sel).every(([l, v]) => labels[l] === v));
  if (!ok) { problems++; console.log(`${where}: spec.selector matches no pod template in the files`); }
}
for (const [name, rules, where] of clusterRoles) {
  if (name !== CLIENT_ROLE) continue;
  const got = ruleSet(rules);
  const want = new Set(CLIENT_RULES);
  for (const r of want) if (!got.has(r)) { problems++; console.log(`${where}: rules lack '${r.trim()}'`); }
  for (const r of got) if (!want.has(r)) { problems++; console.log(`${where}: rules grant more than the client needs: '${r.trim()}'`); }
}

if (scriptsDir)
  scripts.forEach(([where, shell, text], i) => {
    // the script keeps its line numbers: line N of the file is line N-1
    writeFileSync(path.join(scriptsDir, `script-${String(i).padStart(2, "0")}.${shell}`),
      `# shellcheck shell=${shell} # ${where.replace(/\n/g, " ")}\n${text}`);
  });

console.log(`${documents} documents in ${files.length} files: ` +
  (problems ? `${problems} problems` : "valid"));
process.exit(problems ? 1 : 0);
