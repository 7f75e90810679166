"""The Helm chart (helm/wsbridge), tested without a cluster and without helm.

No helm binary is available here (Debian 12 has no package and no registry we reach ships one),
so the chart is rendered by helm_render/main.go: Go text/template + sprig from Debian's golang
packages plus Helm's own functions and values semantics (see its header). The test builds it
with `go build` in GOPATH mode against /usr/share/gocode (no module download).

Renders: the default values, every optional object (values-full.yaml), and the sidecar example
application chart (helm/wsbridge/examples/sidecar-app, wsbridge as a file:// dependency). Then:
kinds, probes against the real binary's admin listener, the rendered config through
`wsbridge --check-config`, drain timing, security context, the config checksum, and the objects
against the Kubernetes API schemas (npm kubernetes-models, @kubernetes-models/prometheus-operator).
"""

import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHART = os.path.join(REPO, "helm", "wsbridge")
SIDECAR_APP = os.path.join(CHART, "examples", "sidecar-app")
ADMIN_PATHS = {"/healthz", "/readyz"}  # bridge/admin.c


def bridge_bin():
    env = os.environ.get("WSBRIDGE_BIN")
    return os.path.abspath(env) if env else os.path.join(REPO, "build", "wsbridge")


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    go = shutil.which("go")
    assert go, "go not found: scripts/setup.sh installs golang-go"
    out = tmp_path_factory.mktemp("helm_render") / "wsb-helm-render"
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="",
               GOCACHE=os.environ.get("WSB_GOCACHE", str(tmp_path_factory.mktemp("gocache"))))
    subprocess.run([go, "build", "-o", str(out), "."], cwd=os.path.join(HERE, "helm_render"),
                   env=env, check=True, timeout=300)
    return str(out)


def render_text(renderer, chart, *value_files, release="rel", tmp_path=None, values=None):
    args = [renderer, "--release", release, "--namespace", "apps"]
    for f in value_files:
        args += ["-f", f]
    if values is not None:
        p = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
        p.write_text(yaml.safe_dump(values))
        args += ["-f", str(p)]
    args.append(chart)
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def render(renderer, chart, *value_files, **kw):
    text = render_text(renderer, chart, *value_files, **kw)
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= d.keys(), d
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    assert len(found) == 1, (kind, [d["kind"] for d in docs])
    return found[0]


def wsbridge_container(pod_spec):
    c = [c for c in pod_spec["containers"] if c["name"] == "wsbridge"]
    assert len(c) == 1
    return c[0]


def config_of(docs):
    cm = [d for d in by_kind(docs, "ConfigMap") if "wsbridge.json" in d.get("data", {})]
    assert len(cm) == 1
    return cm[0], cm[0]["data"]["wsbridge.json"]


def check_config(tmp_path, text, env=None):
    p = tmp_path / "wsbridge.json"
    p.write_text(text)
    r = subprocess.run([bridge_bin(), "--check-config", "-c", str(p)], capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, **(env or {})))
    return r.returncode, r.stdout + r.stderr


def k8s_validate(docs):
    node = shutil.which("node")
    assert node, "node not found"
    assert os.path.isdir(os.path.join(HERE, "node_modules", "kubernetes-models")), \
        "npm packages missing: scripts/setup.sh runs `npm ci` in tests/helm"
    r = subprocess.run([node, os.path.join(HERE, "k8s_validate.js")], input=json.dumps(docs),
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pod_invariants(pod_spec, docs):
    """What every pod that runs wsbridge must satisfy, standalone or sidecar."""
    c = wsbridge_container(pod_spec)
    cm, text = config_of(docs)
    cfg = json.loads(text)
    admin_port = int(cfg["admin"]["listen"].rsplit(":", 1)[1])
    ws_port = int(cfg["listen"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"wsb-ws": ws_port, "wsb-admin": admin_port}

    # Probes: the admin listener's real paths on its port.
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": admin_port}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": admin_port}
    assert c["startupProbe"]["httpGet"]["path"] in ADMIN_PATHS

    # Drain: preStop sleep, then SIGTERM and drain_timeout_ms, all inside the grace period.
    drain_s = math.ceil(cfg.get("drain_timeout_ms", 10000) / 1000)
    sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    grace = pod_spec["terminationGracePeriodSeconds"]
    assert grace >= sleep + drain_s + 1, (grace, sleep, drain_s)

    # Hardening.
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]

    # Every mount has a volume; the config volume is the rendered ConfigMap.
    vols = {v["name"]: v for v in pod_spec["volumes"]}
    for m in c["volumeMounts"]:
        assert m["name"] in vols, m
    assert vols["wsbridge-config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert c["args"] == ["--config", "/etc/wsbridge/config/wsbridge.json"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/etc/wsbridge/config"] == "wsbridge-config"
    # Files the config names live on mounted volumes.
    for key in ("cert", "key", "client_ca"):
        path = (cfg.get("tls") or {}).get(key)
        if path:
            assert os.path.dirname(path) in mounts, (key, path)
    for k in (cfg.get("auth", {}).get("jwt", {}).get("keys") or []):
        if "file" in k:
            assert os.path.dirname(k["file"]) in mounts, k

    # Unique container ports and port names across the whole pod (sidecar next to an app).
    all_ports = [p["containerPort"] for x in pod_spec["containers"] for p in x.get("ports", [])]
    names = [p["name"] for x in pod_spec["containers"] for p in x.get("ports", []) if "name" in p]
    assert len(all_ports) == len(set(all_ports)), all_ports
    assert len(names) == len(set(names)), names
    assert all(len(n) <= 15 for n in names)

    # The checksum annotation is the config's hash, so a config change rolls the pods.
    ann = pod_spec_annotations[id(pod_spec)]
    assert ann["checksum/wsbridge-config"] == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    return cfg


pod_spec_annotations = {}


def pod_of(deployment):
    tpl = deployment["spec"]["template"]
    pod_spec_annotations[id(tpl["spec"])] = tpl["metadata"].get("annotations", {})
    return tpl["spec"]


# ---------------------------------------------------------------------------------------


def test_default_values(renderer, tmp_path):
    docs = render(renderer, CHART)
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ConfigMap", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"])
    dep = one(docs, "Deployment")
    pod = pod_of(dep)
    cfg = pod_invariants(pod, docs)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"]["matchLabels"].items() <= \
        dep["spec"]["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert "tls" not in cfg
    # 10 s drain + 5 s preStop + 5 s margin.
    assert pod["terminationGracePeriodSeconds"] == 20
    svc = one(docs, "Service")
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == \
        {"ws": "wsb-ws", "admin": "wsb-admin"}
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    rc, out = check_config(tmp_path, config_of(docs)[1])
    assert (rc, out.strip()) == (0, "ok")


def test_image_tag_follows_the_chart_and_project_version(renderer):
    chart = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))
    cmake = open(os.path.join(REPO, "CMakeLists.txt")).read()
    version = re.search(r"project\(wsbridge VERSION (\S+)", cmake).group(1)
    assert chart["appVersion"] == version
    docs = render(renderer, CHART)
    c = wsbridge_container(pod_of(one(docs, "Deployment")))
    assert c["image"] == f"wsbridge:{version}"


def test_every_optional_object(renderer, tmp_path):
    docs = render(renderer, CHART, os.path.join(HERE, "values-full.yaml"))
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ConfigMap", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget",
         "Ingress", "HorizontalPodAutoscaler", "ServiceMonitor"])
    dep = one(docs, "Deployment")
    pod = pod_of(dep)
    cfg = pod_invariants(pod, docs)
    assert "replicas" not in dep["spec"]  # the HPA owns the replica count
    # 30.5 s drain rounds up to 31 s.
    assert pod["terminationGracePeriodSeconds"] == 5 + 31 + 5

    # TLS and client certificates: the config names the mounted secret files.
    assert cfg["tls"] == {"cert": "/etc/wsbridge/tls/tls.crt", "key": "/etc/wsbridge/tls/tls.key",
                          "client_ca": "/etc/wsbridge/client-ca/ca.crt",
                          "watch_interval_ms": 10000}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["wsbridge-tls"]["secret"]["secretName"] == "wsbridge-tls"
    assert vols["wsbridge-client-ca"]["secret"]["secretName"] == "wsbridge-client-ca"
    assert vols["wsbridge-jwt-keys"]["secret"]["secretName"] == "wsbridge-jwt-keys"
    c = wsbridge_container(pod)
    assert c["envFrom"] == [{"secretRef": {"name": "wsbridge-kafka"}}]
    assert c["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "wsbridge-jwt-hmac"
    # Secrets stay references in the ConfigMap.
    text = config_of(docs)[1]
    assert "${KAFKA_PASSWORD}" in text and "${JWT_HS256_SECRET}" in text
    # Large integers stay integers (Helm decodes numbers as float64).
    assert cfg["limits"]["max_connections"] == 1000000

    ing = one(docs, "Ingress")
    ann = ing["metadata"]["annotations"]
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(ann["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert ann["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    path = ing["spec"]["rules"][0]["http"]["paths"][0]
    assert path["path"] == cfg["path"] == "/ws"
    assert path["backend"]["service"]["port"]["name"] == "ws"

    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 2,
                           "selector": {"matchLabels": dep["spec"]["selector"]["matchLabels"]}}
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"][0]["port"] == "admin"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert "admin" in [p["name"] for p in one(docs, "Service")["spec"]["ports"]]

    rc, out = check_config(tmp_path, text, {"KAFKA_PASSWORD": "x", "JWT_HS256_SECRET": "y" * 32})
    assert (rc, out.strip()) == (0, "ok")


def test_sidecar_example_app(renderer, tmp_path):
    docs = render(renderer, SIDECAR_APP, release="shop")
    # The wsbridge chart renders only its ConfigMap; the application owns the pod.
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Service"]
    dep = one(docs, "Deployment")
    pod = pod_of(dep)
    assert [c["name"] for c in pod["containers"]] == ["web", "wsbridge"]
    cfg = pod_invariants(pod, docs)
    assert pod["terminationGracePeriodSeconds"] >= 15 + 5
    svc = one(docs, "Service")
    assert "wsb-ws" in [p["targetPort"] for p in svc["spec"]["ports"]]
    assert cfg["connectors"]["events"]["type"] == "kafka"
    rc, out = check_config(tmp_path, config_of(docs)[1],
                           {"KAFKA_USERNAME": "u", "KAFKA_PASSWORD": "p"})
    assert (rc, out.strip()) == (0, "ok")


def test_config_change_changes_the_checksum(renderer, tmp_path):
    a = render(renderer, CHART)
    b = render(renderer, CHART, tmp_path=tmp_path, values={"config": {"log": {"level": "debug"}}})
    c = render(renderer, CHART, tmp_path=tmp_path, values={"replicaCount": 5})
    key = "checksum/wsbridge-config"

    def ann(docs):
        return one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"][key]
    assert ann(a) != ann(b)
    assert ann(a) == ann(c)


def test_values_null_removes_a_default(renderer, tmp_path):
    docs = render(renderer, CHART, tmp_path=tmp_path,
                  values={"config": {"workers": None}, "podDisruptionBudget": {"enabled": False}})
    assert "workers" not in json.loads(config_of(docs)[1])
    assert not by_kind(docs, "PodDisruptionBudget")


def test_tls_without_secret_is_an_error(renderer, tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text(yaml.safe_dump({"tls": {"enabled": True}}))
    r = subprocess.run([renderer, "-f", str(p), CHART], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert "tls.secretName is required" in r.stderr


@pytest.mark.parametrize("values,message", [
    ({"tls": {"enable": True}}, "tls: Additional property enable is not allowed"),
    ({"replicaCount": "two"}, "replicaCount: Invalid type"),
    ({"ports": {"ws": 70000}}, "ports.ws: Must be less than or equal to 65535"),
    ({"service": {"type": "Headless"}}, "service.type: service.type must be one of"),
    ({"standalon": {"enabled": False}}, "Additional property standalon is not allowed"),
])
def test_values_schema_refuses_typos(renderer, tmp_path, values, message):
    """values.schema.json: a typo in the chart's values fails the render (helm install too)."""
    p = tmp_path / "v.yaml"
    p.write_text(yaml.safe_dump(values))
    r = subprocess.run([renderer, "-f", str(p), CHART], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert "values don't meet the specifications of the schema" in r.stderr
    assert message in r.stderr, r.stderr


def test_values_schema_applies_to_the_sidecar_dependency(renderer, tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text(yaml.safe_dump({"wsbridge": {"tls": {"secretname": "x"}}}))
    r = subprocess.run([renderer, "-f", str(p), SIDECAR_APP], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "wsbridge:\n- tls: Additional property secretname" in r.stderr, \
        r.stderr


def test_kubernetes_api_schemas(renderer):
    docs = (render(renderer, CHART) + render(renderer, CHART, os.path.join(HERE, "values-full.yaml"))
            + render(renderer, SIDECAR_APP))
    rc, out = k8s_validate(docs)
    assert rc == 0, out
    assert out.count("\nok ") + out.startswith("ok ") == len(docs), out
    # The check can fail: a port given as a string and a missing container image are caught.
    bad = json.loads(json.dumps(one(render(renderer, CHART), "Deployment")))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    bad["spec"]["replicas"] = "two"
    rc, out = k8s_validate([bad])
    assert rc == 1 and "containerPort must be integer" in out and "replicas" in out, out


def test_rendered_pod_probes_answer_on_the_real_binary(renderer, tmp_path):
    """Start wsbridge with the ConfigMap the chart rendered (ports moved to free loopback
    ports) and call exactly the probe paths and ports of the rendered pod spec."""
    ws, admin = free_port(), free_port()
    docs = render(renderer, CHART, tmp_path=tmp_path,
                  values={"ports": {"ws": ws, "admin": admin}, "bindAddress": "127.0.0.1"})
    c = wsbridge_container(pod_of(one(docs, "Deployment")))
    cfgfile = tmp_path / "wsbridge.json"
    cfgfile.write_text(config_of(docs)[1])
    log = open(tmp_path / "stderr", "w+")
    p = subprocess.Popen([bridge_bin(), *c["args"][:1], str(cfgfile)], stderr=log,
                         stdout=subprocess.DEVNULL)
    try:
        probes = [c[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")]
        deadline = time.time() + 10
        for probe in probes:
            while True:
                try:
                    url = f"http://127.0.0.1:{probe['port']}{probe['path']}"
                    with urllib.request.urlopen(url, timeout=2) as r:
                        assert r.status == 200
                        break
                except OSError:
                    assert p.poll() is None, open(tmp_path / "stderr").read()
                    assert time.time() < deadline, f"{probe} never answered"
                    time.sleep(0.1)
        # The WebSocket port of the pod spec is the listener.
        wsport = [x["containerPort"] for x in c["ports"] if x["name"] == "wsb-ws"][0]
        socket.create_connection(("127.0.0.1", wsport), timeout=2).close()
        # The drain finishes within the grace period the pod spec allows.
        grace = pod_of(one(docs, "Deployment"))["terminationGracePeriodSeconds"]
        t0 = time.time()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=grace) == 0
        assert time.time() - t0 < grace
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
