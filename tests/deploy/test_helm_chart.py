"""Render the Helm chart offline and check what a cluster would be sent.

No cluster and no `helm` binary: `helm_python` embeds Helm's Go library (lint, schema validation, render)
and `kubernetes_validate` checks each manifest against the bundled Kubernetes OpenAPI schemas in strict
mode (unknown fields rejected). ServiceMonitor has no bundled schema, so its shape is asserted by hand. The one
template that reads the cluster (`lookup` of the peers' Secret) is rendered once against a stand-in API server.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import build_parser
from app.mirror.sync import SyncConfig
from app.registry.policy import parse
from app.settings import Settings

from ._support import CHART_DIR, require_module

helm = require_module("helm_python", "helm-python-sdk")
kv = require_module("kubernetes_validate.utils", "kubernetes-validate")

RELEASE = "push"
NAMESPACE = "registry"
FULLNAME = f"{RELEASE}-storj-registry"
PEERS = f"{FULLNAME}-peers"  # the headless Service, and the Secret holding the peers' shared secret
# The oldest release the chart declares (Chart.yaml kubeVersion), one in wide use, and the newest bundled.
KUBE_VERSIONS = ("1.25.0", "1.30.0", kv.latest_version())
LINT_KUBE_VERSION = "v1.30.0"
STAGING_DIR = "/var/lib/storj-registry/staging"
CRD_GROUPS = {"monitoring.coreos.com"}

ACCESS_KEY = "jwtest-access-key-0123456789"
SECRET_KEY = "jwtest-secret-key-abcdefghijklmnop"
HTPASSWD = "pusher:$2y$05$abcdefghijklmnopqrstuu5q3aX8XBzYcA7k9gN6E0wyp1YzYb4C."

S3: dict[str, Any] = {
    "publicUrl": "https://registry.example.com",
    "storage": {"type": "s3", "s3": {"bucket": "images", "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}},
}
INGRESS_TLS: dict[str, Any] = {
    **S3,
    "ingress": {
        "enabled": True,
        "hosts": [{"host": "push.example.com", "paths": [{"path": "/v2", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "push-tls", "hosts": ["push.example.com"]}],
    },
}
EXISTING_SECRET: dict[str, Any] = {
    "publicUrl": "https://registry.example.com",
    "storage": {"s3": {"bucket": "images"}},
    "existingSecret": "storj-credentials",
    "auth": {"htpasswd": {"enabled": True}},
}
STAGING_PVC: dict[str, Any] = {
    **S3,
    "replicaCount": 1,
    "staging": {"persistence": {"enabled": True, "size": "200Gi", "storageClass": "fast-ssd"}},
}
SCALED: dict[str, Any] = {
    **S3,
    "replicaCount": 3,
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 8},
    "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "staging": {"persistence": {"enabled": True, "accessMode": "ReadWriteMany", "storageClass": "nfs"}},
}
TOKEN_KEY = "token-signing-key-placeholder"  # only carried into the Secret, never parsed
RULES = "rules:\n  - users: [pusher]\n    repositories: ['team/*']\n    actions: [push]\n"
TOKEN_AUTH: dict[str, Any] = {
    **INGRESS_TLS,
    "auth": {
        "htpasswd": {"enabled": True, "content": HTPASSWD},
        "access": RULES,
        "anonymousPull": True,
        "token": {"enabled": True, "service": "push.example.com", "ttl": 600},
        "tokenKey": TOKEN_KEY,
    },
    "trustedProxies": "10.0.0.0/8, 192.168.0.0/16",
    "serviceUrl": "https://push.example.com",
}
GITHUB = "https://token.actions.githubusercontent.com"
CI_RULES = (
    f"rules:\n  - issuer: {GITHUB}\n    claims: {{repository_owner: acme}}\n"
    "    repositories: ['acme/*']\n    actions: [push]\n"
)
RECEIVER = {
    "name": "deploys",
    "url": "https://deploy.example.com/hook",
    "secret": "receiver-shared-secret",
    "headers": {"Authorization": "Bearer receiver-token"},
    "events": ["manifest.push"],
    "repositories": ["prod/*"],
}
OIDC_EVENTS: dict[str, Any] = {
    **S3,
    "auth": {"access": CI_RULES, "oidc": {"issuers": [{"issuer": GITHUB, "audience": "push.example.com"}]}},
    "events": {"endpoints": [RECEIVER], "auditLog": "/dev/stdout"},
}
SYNC_CONFIG: dict[str, Any] = {
    "mirrors": [
        {"source": "docker://registry-1.docker.io/library/alpine", "destination": "mirror/alpine", "newest": 3},
        {"source": "docker://ghcr.io/team/app", "tags": ["v1"], "credentials_env": "GHCR_CREDS"},
    ]
}
SYNC: dict[str, Any] = {
    **S3,
    "sync": {
        "enabled": True,
        "config": SYNC_CONFIG,
        "dockerConfigSecret": "upstream-logins",
        "extraEnv": [{"name": "GHCR_CREDS", "valueFrom": {"secretKeyRef": {"name": "ghcr", "key": "creds"}}}],
    },
}
POLICY = {
    "immutable": [{"repositories": ["release/*"], "tags": ["v*"]}],
    "retention": [{"repositories": ["ci/*"], "keep_last": 3, "keep_tags": ["latest"]}],
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "sync": SYNC,
    "policy-gc": {**S3, "policy": POLICY, "gc": {"enabled": True}},
    "oidc-events": OIDC_EVENTS,
    "defaults": {},
    "token-auth": TOKEN_AUTH,
    "ingress-tls": INGRESS_TLS,
    "existing-secret": EXISTING_SECRET,
    "staging-pvc": STAGING_PVC,
    "scaled": SCALED,
    "filesystem": {"storage": {"type": "filesystem"}, "replicaCount": 1},
    "pod-tls-token-auth": {
        **S3,
        "tls": {"enabled": True, "secretName": "pod-tls"},
        "auth": {"token": {"realm": "https://auth.example.com/token", "service": "registry"}},
        "metrics": {"podAnnotations": True, "serviceMonitor": {"enabled": True}},
    },
}


@dataclass
class Rendered:
    """One `helm template` run: the manifests as data, and NOTES.txt as text."""

    files: dict[str, str]
    manifests: list[dict[str, Any]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {m["kind"] for m in self.manifests}

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((m for m in self.all(kind) if m["metadata"]["name"] == name), None)

    @property
    def service(self) -> dict[str, Any]:
        """The Service clients reach (the other one, headless, only lets the pods find each other)."""
        service = self.named("Service", FULLNAME)
        assert service is not None
        return service

    @property
    def secret(self) -> dict[str, Any]:
        """The chart's Secret for credentials and files (the peers' secret has a Secret of its own)."""
        secret = self.named("Secret", FULLNAME)
        assert secret is not None
        return secret

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod["containers"]
        assert len(containers) == 1
        container: dict[str, Any] = containers[0]
        return container

    def env(self) -> dict[str, dict[str, Any]]:
        return {item["name"]: item for item in self.container.get("env", [])}

    def volume(self, name: str) -> dict[str, Any]:
        return next(v for v in self.pod["volumes"] if v["name"] == name)

    def mount(self, name: str) -> dict[str, Any]:
        return next(m for m in self.container["volumeMounts"] if m["name"] == name)


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    loaded = helm.Chart.load(str(CHART_DIR))
    try:
        yield loaded
    finally:
        loaded.close()


def render(chart: Any, values: dict[str, Any]) -> Rendered:
    return parse_files(chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE))


def parse_files(files: dict[str, str]) -> Rendered:
    manifests: list[dict[str, Any]] = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml"):
            manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    notes = next((text for path, text in files.items() if path.endswith("/NOTES.txt")), "")
    return Rendered(files=files, manifests=manifests, notes=notes)


def template_text(rendered: Rendered, template: str) -> str:
    return rendered.files[f"storj-registry/templates/{template}"]


@contextmanager
def cluster_holding(*secrets: dict[str, Any]) -> Iterator[Any]:
    """A Helm configuration whose cluster is a stand-in API server holding only `secrets`: enough for `lookup`."""
    secret = {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret", "verbs": ["get"]}
    answers: dict[str, dict[str, Any]] = {
        "/api/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [secret]},
        **{f"/api/v1/namespaces/{s['metadata']['namespace']}/secrets/{s['metadata']['name']}": s for s in secrets},
    }
    not_found = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            data = json.dumps(answers.get(path, not_found)).encode()
            self.send_response(200 if path in answers else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stand-in", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "stand-in", "user": {}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in"}}],
        "current-context": "stand-in",
    }
    try:
        with helm.Config(kubeconfig_content=yaml.safe_dump(kubeconfig), namespace=NAMESPACE) as config:
            yield config
    finally:
        server.shutdown()
        server.server_close()


# --- the chart as a whole -------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_strict_reports_no_error_or_warning(values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART_DIR), copy.deepcopy(values), strict=True, kube_version=LINT_KUBE_VERSION)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); 2 is a warning, 3 an error.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_manifest_is_valid_kubernetes(chart: Any, values: dict[str, Any], kube_version: str) -> None:
    rendered = render(chart, values)
    assert {"Deployment", "Service", "ServiceAccount"} <= rendered.kinds()
    for manifest in rendered.manifests:
        if manifest["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue  # no bundled schema; see test_servicemonitor_scrapes_metrics
        label = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kv.validate(manifest, kube_version, strict=True)
        except kv.ValidationError as exc:
            where = "/".join(str(part) for part in exc.path)
            pytest.fail(f"{label} is invalid for Kubernetes {kube_version}: {exc.message} at {where}")
        assert manifest["metadata"]["namespace"] == NAMESPACE, label
        assert manifest["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, label


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (Kubernetes takes one of them, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = sorted({str(key) for key in keys if keys.count(key) > 1})
        assert not duplicates, f"{duplicates} given twice at line {node.start_mark.line + 1}"
        return super().construct_mapping(node, deep)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_no_manifest_gives_a_key_twice(chart: Any, values: dict[str, Any]) -> None:
    for name, text in render(chart, values).files.items():
        if name.endswith(".yaml"):
            list(yaml.load_all(text, Loader=UniqueKeyLoader))


def test_the_jobs_pods_are_selected_by_no_service_and_not_by_the_budget(chart: Any) -> None:
    """gc and sync pods carry the release's selector labels too: only their component tells them apart, or the
    Services would send pushes (and the peers' lookups) to a job that serves nothing."""
    rendered = render(chart, {**SYNC, "policy": POLICY, "gc": {"enabled": True}})
    jobs = [cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"] for cron in rendered.all("CronJob")]
    assert len(jobs) == 2
    selectors = [service["spec"]["selector"] for service in rendered.all("Service")]
    selectors += [pdb["spec"]["selector"]["matchLabels"] for pdb in rendered.all("PodDisruptionBudget")]
    assert len(selectors) == 3  # the Service, the peers' Service, the budget
    for labels in jobs:
        assert not any(selector.items() <= labels.items() for selector in selectors), labels


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_selectors_match_the_pods(chart: Any, values: dict[str, Any]) -> None:
    rendered = render(chart, values)
    deployment = rendered.one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        *(service["spec"]["selector"] for service in rendered.all("Service")),
        *(pdb["spec"]["selector"]["matchLabels"] for pdb in rendered.all("PodDisruptionBudget")),
    ]
    for selector in selectors:
        assert selector and selector.items() <= pod_labels.items()


# --- defaults: two hardened pods, each staging on its own emptyDir --------------------------------


def test_defaults_render_two_peer_pods_with_a_disruption_budget(chart: Any) -> None:
    rendered = render(chart, {})
    assert rendered.kinds() == {"Deployment", "Service", "ServiceAccount", "Secret", "PodDisruptionBudget"}
    assert rendered.one("Deployment")["spec"]["replicas"] == 2
    assert sorted(service["metadata"]["name"] for service in rendered.all("Service")) == [FULLNAME, PEERS]
    assert sorted(secret["metadata"]["name"] for secret in rendered.all("Secret")) == [FULLNAME, PEERS]


def test_one_pod_renders_only_the_basic_objects(chart: Any) -> None:
    rendered = render(chart, {"replicaCount": 1})
    assert rendered.kinds() == {"Deployment", "Service", "ServiceAccount", "Secret"}
    assert [service["metadata"]["name"] for service in rendered.all("Service")] == [FULLNAME]
    assert [secret["metadata"]["name"] for secret in rendered.all("Secret")] == [FULLNAME]
    assert rendered.one("Deployment")["spec"]["replicas"] == 1


def test_pod_runs_as_non_root_with_read_only_root_filesystem(chart: Any) -> None:
    rendered = render(chart, {})
    pod, container = rendered.pod, rendered.container
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_probes_hit_healthz_and_readyz_on_the_http_port(chart: Any) -> None:
    container = render(chart, {}).container
    assert container["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (liveness["path"], liveness["port"], liveness["scheme"]) == ("/healthz", "http", "HTTP")
    assert (readiness["path"], readiness["port"], readiness["scheme"]) == ("/readyz", "http", "HTTP")
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_staging_and_tmp_are_size_limited_empty_dirs(chart: Any) -> None:
    rendered = render(chart, {})
    assert rendered.env()["REGISTRY_STAGING_DIR"]["value"] == STAGING_DIR
    assert rendered.mount("staging")["mountPath"] == STAGING_DIR
    assert rendered.volume("staging")["emptyDir"] == {"sizeLimit": "20Gi"}
    assert rendered.mount("tmp")["mountPath"] == "/tmp"
    assert rendered.volume("tmp")["emptyDir"]["sizeLimit"] == "1Gi"


def test_settings_reach_the_container_as_registry_variables(chart: Any) -> None:
    values = {
        **S3,
        "storage": {
            **S3["storage"],
            "s3": {**S3["storage"]["s3"], "prefix": "team-a", "region": "us-east-1"},
        },
        "maxManifestBytes": 8388608,
        "deleteEnabled": True,
        "logFormat": "text",
        "extraEnv": [{"name": "REGISTRY_S3_MAX_CONCURRENCY", "value": "8"}],
    }
    env = render(chart, values).env()
    plain = {name: item["value"] for name, item in env.items() if "value" in item}
    assert plain == {
        "REGISTRY_STORAGE": "s3",
        "REGISTRY_STAGING_DIR": STAGING_DIR,
        "REGISTRY_S3_ENDPOINT": "https://gateway.storjshare.io",
        "REGISTRY_S3_BUCKET": "images",
        "REGISTRY_S3_PREFIX": "team-a",
        "REGISTRY_S3_REGION": "us-east-1",
        "REGISTRY_PUBLIC_URL": "https://registry.example.com",
        "REGISTRY_MAX_MANIFEST_BYTES": "8388608",
        "REGISTRY_DELETE_ENABLED": "true",
        "REGISTRY_LOG_FORMAT": "text",
        "REGISTRY_SHUTDOWN_DRAIN_SECONDS": "10",
        "REGISTRY_SHUTDOWN_GRACE_SECONDS": "40",
        "REGISTRY_ADVERTISE_URL": "http://$(POD_IP):5000",
        "REGISTRY_PEERS": f"dns+http://{PEERS}.{NAMESPACE}.svc.cluster.local:5000",
        "REGISTRY_PEERS_REFRESH_SECONDS": "5",
        "REGISTRY_S3_MAX_CONCURRENCY": "8",
        "TMPDIR": "/tmp",
    }


ONE_POD: dict[str, Any] = {"replicaCount": 1}
PEER_PODS: dict[str, Any] = {"replicaCount": 2}
SLOW_PEERS: dict[str, Any] = {"replicaCount": 2, "peers": {"refreshSeconds": 8}}


@pytest.mark.parametrize(
    ("values", "termination_grace", "drain", "grace"),
    [
        (ONE_POD, 60, 5, 50),
        (ONE_POD, 10, 2, 6),
        (ONE_POD, 0, 0, 0),
        # With peers the drain lasts two refresh intervals, so that every peer has seen the pod leave.
        (PEER_PODS, 60, 10, 40),
        (PEER_PODS, 10, 2, 6),
        (SLOW_PEERS, 100, 16, 68),
        (SLOW_PEERS, 60, 15, 30),
    ],
)
def test_drain_and_grace_fit_in_the_termination_grace_period(
    chart: Any, values: dict[str, Any], termination_grace: int, drain: int, grace: int
) -> None:
    """The service's graceful stop (drain, then requests in flight) ends before the kubelet's SIGKILL."""
    env = render(chart, {**values, "terminationGracePeriodSeconds": termination_grace}).env()
    assert env["REGISTRY_SHUTDOWN_DRAIN_SECONDS"]["value"] == str(drain)
    assert env["REGISTRY_SHUTDOWN_GRACE_SECONDS"]["value"] == str(grace)
    assert drain + grace <= termination_grace


def test_s3_credentials_come_only_from_the_secret(chart: Any) -> None:
    rendered = render(chart, S3)
    env = rendered.env()
    for name, key in (
        ("REGISTRY_S3_ACCESS_KEY", "s3-access-key"),
        ("REGISTRY_S3_SECRET_KEY", "s3-secret-key"),
    ):
        assert "value" not in env[name]
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": FULLNAME, "key": key}}
    for manifest in rendered.manifests:
        text = yaml.safe_dump(manifest)
        assert ACCESS_KEY not in text and SECRET_KEY not in text, manifest["kind"]
    secret = rendered.secret
    decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert decoded == {"s3-access-key": ACCESS_KEY, "s3-secret-key": SECRET_KEY}


def test_secret_checksum_rolls_the_pods_when_credentials_change(chart: Any) -> None:
    rendered = render(chart, S3)
    annotation = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
    assert annotation == hashlib.sha256(template_text(rendered, "secret.yaml").encode()).hexdigest()
    rotated = copy.deepcopy(S3)
    rotated["storage"]["s3"]["secretKey"] = "rotated-secret"
    other = render(chart, rotated).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert other["checksum/secret"] != annotation


def test_service_exposes_port_5000_without_affinity(chart: Any) -> None:
    service = render(chart, {}).service["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP"}]
    assert service["sessionAffinity"] == "None"


def test_notes_give_port_forward_push_and_public_pull_address(chart: Any) -> None:
    notes = render(chart, S3).notes
    assert f"port-forward svc/{FULLNAME} 5000:5000" in notes
    assert "docker push localhost:5000/NAME:TAG" in notes
    assert "docker pull registry.example.com/NAME:TAG" in notes
    assert "https://registry.example.com/v2/" in notes
    assert "insecure-registries" not in notes
    assert "WARNING" not in notes


def test_notes_warn_about_missing_settings_and_plain_http_pulls(chart: Any) -> None:
    assert "publicUrl is empty" in render(chart, {}).notes
    assert "storage.s3.bucket is empty" in render(chart, {}).notes
    notes = render(chart, {**S3, "publicUrl": "http://pull.example.com"}).notes
    assert '"insecure-registries": ["pull.example.com"]' in notes


# --- ingress for large pushes ---------------------------------------------------------------------


def test_ingress_streams_unlimited_bodies_with_long_timeouts(chart: Any) -> None:
    ingress = render(chart, INGRESS_TLS).one("Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "900"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "900"
    assert "nginx.ingress.kubernetes.io/upstream-hash-by" not in annotations  # one pod: no affinity needed
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["push.example.com"], "secretName": "push-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "push.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/v2", "Prefix")
    assert path["backend"] == {"service": {"name": FULLNAME, "port": {"number": 5000}}}


def test_ingress_user_annotations_win_and_defaults_can_be_dropped(chart: Any) -> None:
    values = copy.deepcopy(INGRESS_TLS)
    values["ingress"]["annotations"] = {"nginx.ingress.kubernetes.io/proxy-body-size": "20g", "team": "infra"}
    annotations = render(chart, values).one("Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "20g"
    assert annotations["team"] == "infra"
    values["ingress"] = {
        **values["ingress"],
        "nginxLargeUploads": False,
        "annotations": {},
        "className": "traefik",
    }
    ingress = render(chart, values).one("Ingress")
    assert "annotations" not in ingress["metadata"]
    assert ingress["spec"]["ingressClassName"] == "traefik"


def test_notes_give_the_ingress_push_address(chart: Any) -> None:
    notes = render(chart, INGRESS_TLS).notes
    assert "https://push.example.com/v2/" in notes
    assert "docker push push.example.com/NAME:TAG" in notes
    assert "port-forward" not in notes
    plain = copy.deepcopy(INGRESS_TLS)
    plain["ingress"]["tls"] = []
    assert '"insecure-registries": ["push.example.com"]' in render(chart, plain).notes


# --- existing Secret ------------------------------------------------------------------------------


def test_existing_secret_creates_no_secret_and_is_referenced(chart: Any) -> None:
    rendered = render(chart, EXISTING_SECRET)
    assert [secret["metadata"]["name"] for secret in rendered.all("Secret")] == [PEERS]  # only the peers' own
    env = rendered.env()
    assert env["REGISTRY_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "storj-credentials"
    assert env["REGISTRY_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "storj-credentials"
    htpasswd = rendered.volume("htpasswd")["secret"]
    assert htpasswd["secretName"] == "storj-credentials"
    assert htpasswd["items"] == [{"key": "htpasswd", "path": "htpasswd"}]
    mount = rendered.mount("htpasswd")
    assert mount["readOnly"] is True
    assert env["REGISTRY_AUTH_HTPASSWD"]["value"] == f"{mount['mountPath']}/htpasswd"
    assert "WARNING: S3 credentials" not in rendered.notes


def test_existing_secret_key_names_are_configurable(chart: Any) -> None:
    values = {
        **EXISTING_SECRET,
        "secretKeys": {"s3AccessKey": "AWS_ACCESS_KEY_ID", "s3SecretKey": "AWS_SECRET"},
    }
    env = render(chart, values).env()
    assert env["REGISTRY_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "AWS_ACCESS_KEY_ID"
    assert env["REGISTRY_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "AWS_SECRET"


def test_htpasswd_content_goes_into_the_chart_secret(chart: Any) -> None:
    rendered = render(chart, {**S3, "auth": {"htpasswd": {"enabled": True, "content": HTPASSWD}}})
    secret = rendered.secret
    assert base64.b64decode(secret["data"]["htpasswd"]).decode() == HTPASSWD
    assert rendered.volume("htpasswd")["secret"]["secretName"] == FULLNAME
    assert all(HTPASSWD not in yaml.safe_dump(m) for m in rendered.manifests)


def test_htpasswd_without_content_or_existing_secret_is_refused(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match=r"auth\.htpasswd\.content is required"):
        render(chart, {**S3, "auth": {"htpasswd": {"enabled": True}}})


# --- staging on a PersistentVolumeClaim -----------------------------------------------------------


def test_staging_pvc_is_created_and_mounted_at_the_staging_dir(chart: Any) -> None:
    rendered = render(chart, STAGING_PVC)
    pvc = rendered.one("PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == f"{FULLNAME}-staging"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "200Gi"
    assert pvc["spec"]["storageClassName"] == "fast-ssd"
    assert rendered.volume("staging") == {
        "name": "staging",
        "persistentVolumeClaim": {"claimName": f"{FULLNAME}-staging"},
    }
    assert rendered.mount("staging")["mountPath"] == STAGING_DIR
    assert rendered.env()["REGISTRY_STAGING_DIR"]["value"] == STAGING_DIR
    # A ReadWriteOnce claim cannot be attached to a surge pod on another node.
    assert rendered.one("Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_staging_existing_claim_is_used_as_is(chart: Any) -> None:
    values = copy.deepcopy(STAGING_PVC)
    values["staging"]["persistence"]["existingClaim"] = "shared-staging"
    values["staging"]["mountPath"] = "/staging"
    rendered = render(chart, values)
    assert "PersistentVolumeClaim" not in rendered.kinds()
    assert rendered.volume("staging")["persistentVolumeClaim"] == {"claimName": "shared-staging"}
    assert rendered.mount("staging")["mountPath"] == "/staging"
    assert rendered.env()["REGISTRY_STAGING_DIR"]["value"] == "/staging"


def test_storage_class_dash_disables_dynamic_provisioning(chart: Any) -> None:
    values = copy.deepcopy(STAGING_PVC)
    values["staging"]["persistence"]["storageClass"] = "-"
    assert render(chart, values).one("PersistentVolumeClaim")["spec"]["storageClassName"] == ""
    values["staging"]["persistence"]["storageClass"] = ""
    assert "storageClassName" not in render(chart, values).one("PersistentVolumeClaim")["spec"]


# --- several replicas -----------------------------------------------------------------------------


def test_autoscaled_replicas_with_budget_and_shared_staging(chart: Any) -> None:
    rendered = render(chart, SCALED)
    deployment = rendered.one("Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 8)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]
    # A shared staging claim stays possible beside the peers (the autoscaler may run several pods).
    assert rendered.one("PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "REGISTRY_PEERS" in rendered.env()
    assert rendered.service["spec"]["sessionAffinity"] == "None"
    assert "NOTE: several pods" not in rendered.notes


def test_replicas_work_as_peers_without_affinity_or_shared_staging(chart: Any) -> None:
    rendered = render(chart, {**INGRESS_TLS, "replicaCount": 3})
    assert rendered.one("Deployment")["spec"]["replicas"] == 3
    peers = rendered.named("Service", PEERS)
    assert peers is not None, "the headless Service the pods find each other by"
    spec = peers["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is False
    assert spec["selector"] == rendered.service["spec"]["selector"]
    assert spec["ports"] == [{"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP"}]
    env = rendered.env()
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    names = list(env)  # $(POD_IP) expands only in variables that come after it
    assert names.index("POD_IP") < names.index("REGISTRY_ADVERTISE_URL")
    assert env["REGISTRY_ADVERTISE_URL"]["value"] == "http://$(POD_IP):5000"
    assert env["REGISTRY_PEERS"]["value"] == f"dns+http://{PEERS}.{NAMESPACE}.svc.cluster.local:5000"
    assert env["REGISTRY_PEERS_REFRESH_SECONDS"]["value"] == "5"
    assert "value" not in env["REGISTRY_PEER_SECRET"]
    assert env["REGISTRY_PEER_SECRET"]["valueFrom"] == {"secretKeyRef": {"name": PEERS, "key": "peer-secret"}}
    secret = rendered.named("Secret", PEERS)
    assert secret is not None and set(secret["data"]) == {"peer-secret"}
    shared = base64.b64decode(secret["data"]["peer-secret"]).decode()
    assert len(shared) >= 16
    assert all(shared not in yaml.safe_dump(m) for m in rendered.manifests if m["kind"] != "Secret")
    # Any pod takes any request: no session affinity, no hashing at the ingress, no shared staging claim.
    service = rendered.service["spec"]
    assert service["sessionAffinity"] == "None" and "sessionAffinityConfig" not in service
    assert "nginx.ingress.kubernetes.io/upstream-hash-by" not in rendered.one("Ingress")["metadata"]["annotations"]
    assert "PersistentVolumeClaim" not in rendered.kinds()
    assert "emptyDir" in rendered.volume("staging")
    assert rendered.one("Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = rendered.one("PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert "NOTE" not in rendered.notes and "WARNING" not in rendered.notes


PEER_ENV = {
    "POD_IP",
    "REGISTRY_ADVERTISE_URL",
    "REGISTRY_PEERS",
    "REGISTRY_PEERS_REFRESH_SECONDS",
    "REGISTRY_PEER_SECRET",
}
PEER_WIRING: dict[str, tuple[dict[str, Any], bool]] = {
    "one-pod": ({"replicaCount": 1}, False),
    "scaled-to-zero": ({"replicaCount": 0}, False),
    "autoscaled": ({"replicaCount": 1, "autoscaling": {"enabled": True}}, True),
    "turned-off": ({"replicaCount": 3, "peers": {"enabled": False}}, False),
    "turned-on-for-one-pod": ({"replicaCount": 1, "peers": {"enabled": True}}, True),
}


@pytest.mark.parametrize(("values", "wired"), PEER_WIRING.values(), ids=PEER_WIRING.keys())
def test_peers_are_wired_when_more_than_one_pod_can_run(chart: Any, values: dict[str, Any], wired: bool) -> None:
    rendered = render(chart, {**S3, **values})
    assert rendered.env().keys() & PEER_ENV == (PEER_ENV if wired else set())
    assert (rendered.named("Service", PEERS) is not None) is wired
    assert (rendered.named("Secret", PEERS) is not None) is wired
    assert rendered.service["spec"]["sessionAffinity"] == ("ClientIP" if values.get("replicaCount") == 3 else "None")


def test_peers_resolve_in_the_configured_cluster_domain(chart: Any) -> None:
    env = render(chart, {**S3, "clusterDomain": "k8s.example.internal", "peers": {"refreshSeconds": 2}}).env()
    assert env["REGISTRY_PEERS"]["value"] == f"dns+http://{PEERS}.{NAMESPACE}.svc.k8s.example.internal:5000"
    assert env["REGISTRY_PEERS_REFRESH_SECONDS"]["value"] == "2"


def test_existing_peer_secret_is_referenced_and_none_is_made(chart: Any) -> None:
    values = {
        **EXISTING_SECRET,
        "peers": {"existingSecret": "registry-peers"},
        "secretKeys": {"peerSecret": "shared-secret"},
    }
    rendered = render(chart, values)
    assert "Secret" not in rendered.kinds()
    reference = rendered.env()["REGISTRY_PEER_SECRET"]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": "registry-peers", "key": "shared-secret"}
    assert rendered.named("Service", PEERS) is not None


def test_the_peer_secret_is_made_once_and_kept_across_upgrades(chart: Any) -> None:
    """Old and new pods of a rolling update must agree on it: an upgrade reads back the value in the cluster."""

    def shared(rendered: Rendered) -> str:
        secret = rendered.named("Secret", PEERS)
        assert secret is not None
        return base64.b64decode(secret["data"]["peer-secret"]).decode()

    first = shared(render(chart, S3))
    assert shared(render(chart, S3)) != first, "without a cluster to read, each render makes a new one"
    installed = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": PEERS, "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {"peer-secret": base64.b64encode(first.encode()).decode()},
    }
    with cluster_holding(installed) as cluster:
        upgraded = cluster.render(chart, copy.deepcopy(S3), name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
    assert shared(parse_files(upgraded)) == first
    with cluster_holding() as cluster:
        installing = cluster.render(chart, copy.deepcopy(S3), name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert shared(parse_files(installing)) not in {first, ""}


def test_replicas_without_peers_fall_back_to_client_affinity(chart: Any) -> None:
    values = {**INGRESS_TLS, "replicaCount": 3, "peers": {"enabled": False}}
    rendered = render(chart, values)
    service = rendered.service["spec"]
    assert service["sessionAffinity"] == "ClientIP"
    assert service["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    annotations = rendered.one("Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$binary_remote_addr"
    assert "peers.enabled=auto" in rendered.notes
    forced = render(chart, {**values, "service": {"sessionAffinity": "None"}})
    assert forced.service["spec"]["sessionAffinity"] == "None"
    shared_staging = copy.deepcopy(values)
    shared_staging["staging"] = {"persistence": {"enabled": True, "accessMode": "ReadWriteMany"}}
    assert render(chart, shared_staging).service["spec"]["sessionAffinity"] == "None"


def test_client_affinity_can_still_be_asked_for_with_peers(chart: Any) -> None:
    rendered = render(chart, {**INGRESS_TLS, "service": {"sessionAffinity": "ClientIP"}})
    assert "REGISTRY_PEERS" in rendered.env()
    assert rendered.service["spec"]["sessionAffinity"] == "ClientIP"
    annotations = rendered.one("Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$binary_remote_addr"


def test_pdb_follows_the_number_of_pods_unless_set(chart: Any) -> None:
    assert "PodDisruptionBudget" not in render(chart, {"replicaCount": 1}).kinds()
    assert "PodDisruptionBudget" not in render(chart, {"podDisruptionBudget": {"enabled": False}}).kinds()
    autoscaled = render(chart, {"replicaCount": 1, "autoscaling": {"enabled": True}})
    assert autoscaled.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_pdb_defaults_to_max_unavailable_one(chart: Any) -> None:
    values = {"replicaCount": 1, "podDisruptionBudget": {"enabled": True}}
    pdb = render(chart, values).one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]


def test_notes_warn_about_one_claim_or_per_pod_token_keys_for_several_pods(chart: Any) -> None:
    one_claim = {**STAGING_PVC, "replicaCount": 2}
    assert "several pods mount one ReadWriteOnce staging claim" in render(chart, one_claim).notes
    assert "WARNING" not in render(chart, STAGING_PVC).notes
    issuing = {**S3, "auth": {"token": {"enabled": True, "service": "push.example.com"}}}
    assert "Set auth.tokenKey" in render(chart, issuing).notes
    assert "WARNING" not in render(chart, {**issuing, "replicaCount": 1}).notes
    assert "WARNING" not in render(chart, {**issuing, "auth": {**issuing["auth"], "tokenKey": TOKEN_KEY}}).notes


def test_servicemonitor_scrapes_metrics(chart: Any) -> None:
    rendered = render(chart, SCALED)
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] == FULLNAME
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    assert spec["selector"]["matchLabels"].items() <= rendered.service["metadata"]["labels"].items()
    peers = rendered.named("Service", PEERS)
    assert peers is not None
    assert not spec["selector"]["matchLabels"].items() <= peers["metadata"]["labels"].items(), "pods scraped twice"
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    service_ports = {p["name"] for p in rendered.service["spec"]["ports"]}
    assert endpoint["port"] in service_ports
    assert endpoint == {
        "port": "http",
        "path": "/metrics",
        "scheme": "http",
        "interval": "30s",
        "scrapeTimeout": "10s",
    }


# --- other modes ----------------------------------------------------------------------------------


def test_filesystem_storage_mounts_data_and_needs_no_secret(chart: Any) -> None:
    rendered = render(chart, VALUE_SETS["filesystem"])
    assert "Secret" not in rendered.kinds()
    env = rendered.env()
    assert env["REGISTRY_STORAGE"]["value"] == "filesystem"
    assert not any(name.startswith("REGISTRY_S3_") for name in env)
    data_dir = env["REGISTRY_DATA_DIR"]["value"]
    assert rendered.mount("data")["mountPath"] == data_dir
    assert "emptyDir" in rendered.volume("data")
    assert "these pods serve pulls themselves" in rendered.notes
    assert "WARNING" not in rendered.notes
    scaled = render(chart, {**VALUE_SETS["filesystem"], "replicaCount": 2})
    assert "storage.type=filesystem keeps images on each pod's own volume" in scaled.notes


def test_pod_tls_switches_probes_and_scrapes_to_https(chart: Any) -> None:
    rendered = render(chart, VALUE_SETS["pod-tls-token-auth"])
    container = rendered.container
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    env = rendered.env()
    tls_dir = rendered.mount("tls")["mountPath"]
    assert env["REGISTRY_TLS_CERT"]["value"] == f"{tls_dir}/tls.crt"
    assert env["REGISTRY_TLS_KEY"]["value"] == f"{tls_dir}/tls.key"
    assert env["REGISTRY_ADVERTISE_URL"]["value"] == "https://$(POD_IP):5000"
    assert env["REGISTRY_PEERS"]["value"].startswith("dns+https://")
    assert rendered.volume("tls")["secret"]["secretName"] == "pod-tls"
    assert rendered.one("ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "https"
    pod_annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations["prometheus.io/scheme"] == "https"
    assert env["REGISTRY_AUTH_TOKEN_REALM"]["value"] == "https://auth.example.com/token"
    assert env["REGISTRY_AUTH_TOKEN_SERVICE"]["value"] == "registry"


def test_pod_tls_without_a_secret_name_is_refused(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match=r"tls\.secretName is required"):
        render(chart, {**S3, "tls": {"enabled": True}})


def test_image_reference_from_tag_or_digest(chart: Any) -> None:
    assert render(chart, {}).container["image"] == "storj-registry:0.1.0"
    tagged = render(chart, {"image": {"repository": "ghcr.io/acme/storj-registry", "tag": "1.2.3"}})
    assert tagged.container["image"] == "ghcr.io/acme/storj-registry:1.2.3"
    digest = "sha256:" + "a" * 64
    pinned = render(chart, {"image": {"repository": "ghcr.io/acme/storj-registry", "digest": digest}})
    assert pinned.container["image"] == f"ghcr.io/acme/storj-registry@{digest}"


# --- the schema catches mistakes before anything is rendered --------------------------------------

BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "replicas-as-word": ({"replicaCount": "three"}, "replicaCount"),
    "unknown-top-level-key": ({"replicas": 3}, "replicas"),
    "misspelt-nested-key": ({"staging": {"sizelimit": "10Gi"}}, "sizelimit"),
    "unknown-storage": ({"storage": {"type": "gcs"}}, "storage/type"),
    "staging-access-mode": ({"staging": {"persistence": {"accessMode": "RWX"}}}, "accessMode"),
    "relative-staging-dir": ({"staging": {"mountPath": "staging"}}, "mountPath"),
    "bad-quantity": ({"staging": {"sizeLimit": "lots"}}, "sizeLimit"),
    "public-url-without-scheme": ({"publicUrl": "registry.example.com"}, "publicUrl"),
    "log-format": ({"logFormat": "xml"}, "logFormat"),
    "affinity-mode": ({"service": {"sessionAffinity": "Sticky"}}, "sessionAffinity"),
    "peers-mode": ({"peers": {"enabled": "yes"}}, "peers"),
    "peers-refresh": ({"peers": {"refreshSeconds": 0}}, "refreshSeconds"),
    "budget-mode": ({"podDisruptionBudget": {"enabled": "sometimes"}}, "podDisruptionBudget"),
    "cluster-domain": ({"clusterDomain": "Cluster Local"}, "clusterDomain"),
    "tiny-manifest-limit": ({"maxManifestBytes": 10}, "maxManifestBytes"),
    "ingress-path-type": (
        {"ingress": {"hosts": [{"host": "a.example.com", "paths": [{"path": "/v2", "pathType": "Any"}]}]}},
        "pathType",
    ),
}


@pytest.mark.parametrize(("values", "where"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_rejects_bad_values(chart: Any, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.validate_schema(copy.deepcopy(values))
    with pytest.raises(helm.HelmValuesError, match=where):
        render(chart, values)


def test_lint_reports_schema_violations_as_errors() -> None:
    report = helm.lint(str(CHART_DIR), {"replicaCount": "three"}, strict=True, kube_version=LINT_KUBE_VERSION)
    assert report["errors"], report
    assert any("replicaCount" in error for error in report["errors"])


def test_schema_accepts_every_documented_default(chart: Any) -> None:
    chart.validate_schema(chart.values)
    chart.validate_schema({"global": {"imageRegistry": "mirror.example.com"}})  # parent charts pass `global`


# --- authentication (app/auth) -------------------------------------------------------------------------


def test_token_auth_rules_and_signing_key_reach_the_service(chart: Any) -> None:
    rendered = render(chart, TOKEN_AUTH)
    env = {name: item.get("value") for name, item in rendered.env().items()}
    auth_dir = rendered.mount("htpasswd")["mountPath"]
    assert env["REGISTRY_AUTH_HTPASSWD"] == f"{auth_dir}/htpasswd"
    assert env["REGISTRY_AUTH_ACCESS"] == f"{auth_dir}/access.yaml"
    assert env["REGISTRY_AUTH_TOKEN_KEY"] == f"{auth_dir}/token.key"
    assert env["REGISTRY_AUTH_TOKEN_ENABLED"] == "true" and env["REGISTRY_AUTH_TOKEN_TTL"] == "600"
    assert env["REGISTRY_AUTH_ANONYMOUS_PULL"] == "true"
    assert env["REGISTRY_TRUSTED_PROXIES"] == "10.0.0.0/8, 192.168.0.0/16"
    assert env["REGISTRY_SERVICE_URL"] == "https://push.example.com"
    items = rendered.volume("htpasswd")["secret"]["items"]
    assert [item["path"] for item in items] == ["htpasswd", "access.yaml", "token.key"]
    data = rendered.secret["data"]
    assert base64.b64decode(data["token.key"]).decode() == TOKEN_KEY
    assert base64.b64decode(data["access.yaml"]).decode() == RULES
    assert all("not-a-real-key" not in yaml.safe_dump(m) for m in rendered.manifests if m["kind"] != "Secret")


# Settings of the replicas' side in app/ (peers), named as agreed; the service's Settings take over once it has them.
PEER_SETTINGS = {"peers", "peers_refresh_seconds", "advertise_url", "peer_secret"}


def test_every_rendered_registry_variable_is_a_setting_of_the_service(chart: Any) -> None:
    """A misspelt variable would be ignored silently by the service (extra settings are allowed)."""
    known = set(Settings.model_fields)
    if "peers" not in known:
        known |= PEER_SETTINGS
    for values in VALUE_SETS.values():
        for name in render(chart, values).env():
            if name.startswith("REGISTRY_"):
                assert name.removeprefix("REGISTRY_").lower() in known, name


def test_the_ingress_publishes_the_token_endpoint_only_when_the_service_issues_tokens(chart: Any) -> None:
    def paths(values: dict[str, Any]) -> list[str]:
        rule = render(chart, values).one("Ingress")["spec"]["rules"][0]
        return [path["path"] for path in rule["http"]["paths"]]

    assert paths(TOKEN_AUTH) == ["/v2", "/auth/token"]
    external = copy.deepcopy(TOKEN_AUTH)
    external["auth"]["token"]["realm"] = "https://sso.example.com/token"
    assert paths(external) == ["/v2"]
    assert paths(INGRESS_TLS) == ["/v2"]


def test_ci_issuers_and_event_receivers_reach_the_service_with_secrets_only_in_the_secret(
    chart: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(chart, OIDC_EVENTS)
    env = rendered.env()
    secret = rendered.secret
    endpoints_ref = env["REGISTRY_EVENTS_ENDPOINTS"]["valueFrom"]["secretKeyRef"]
    assert endpoints_ref == {"name": secret["metadata"]["name"], "key": "events-endpoints.json"}
    endpoints = base64.b64decode(secret["data"]["events-endpoints.json"]).decode()
    auth_dir = rendered.mount("htpasswd")["mountPath"]
    for name in ("REGISTRY_AUTH_OIDC_ISSUERS", "REGISTRY_AUTH_ACCESS", "REGISTRY_EVENTS_AUDIT_LOG"):
        monkeypatch.setenv(name, env[name]["value"])
    monkeypatch.setenv("REGISTRY_EVENTS_ENDPOINTS", endpoints)
    settings = Settings()  # as the pod reads its environment
    assert settings.auth_access == Path(f"{auth_dir}/access.yaml")
    assert [entry.issuer for entry in settings.auth_oidc_issuers] == [GITHUB]
    assert settings.events_endpoints[0].secret == "receiver-shared-secret"
    assert settings.events_endpoints[0].repositories == ("prod/*",)
    assert [item["path"] for item in rendered.volume("htpasswd")["secret"]["items"]] == ["access.yaml"]
    assert all("receiver-shared-secret" not in yaml.safe_dump(m) for m in rendered.manifests if m["kind"] != "Secret")


def test_existing_secret_holds_the_event_receivers(chart: Any) -> None:
    rendered = render(chart, {**OIDC_EVENTS, "existingSecret": "mine", "secretKeys": {"eventsEndpoints": "hooks"}})
    assert rendered.named("Secret", FULLNAME) is None
    reference = rendered.env()["REGISTRY_EVENTS_ENDPOINTS"]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": "mine", "key": "hooks"}


# --- scheduled sync -------------------------------------------------------------------------------


def test_sync_cronjob_runs_the_configured_mirrors_with_the_service_storage_settings(chart: Any) -> None:
    rendered = render(chart, SYNC)
    job = rendered.one("CronJob")["spec"]
    assert job["concurrencyPolicy"] == "Forbid"
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["sync", "/etc/storj-registry/sync/sync.yaml"]
    env = {item["name"]: item for item in container["env"]}
    for name, item in rendered.env().items():  # the same bucket as the service, credentials from its Secret
        if name.startswith(("REGISTRY_S3_", "REGISTRY_STORAGE", "REGISTRY_STAGING_DIR")):
            assert env[name] == item, name
    assert env["DOCKER_CONFIG"]["value"] == "/etc/storj-registry/docker"
    assert env["GHCR_CREDS"]["valueFrom"]["secretKeyRef"] == {"name": "ghcr", "key": "creds"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["staging"] == STAGING_DIR and mounts["tmp"] == "/tmp"
    config_map = rendered.one("ConfigMap")
    assert SyncConfig.model_validate(yaml.safe_load(config_map["data"]["sync.yaml"])).mirrors[0].newest == 3
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert volumes["docker-config"]["secret"]["items"] == [{"key": ".dockerconfigjson", "path": "config.json"}]


def test_sync_is_refused_without_mirrors_or_on_filesystem_storage(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match="lists nothing to copy"):
        render(chart, {**S3, "sync": {"enabled": True}})
    with pytest.raises(helm.HelmError, match=r"needs storage\.type s3"):
        render(chart, {"storage": {"type": "filesystem"}, "sync": {"enabled": True, "config": SYNC_CONFIG}})


def test_the_policy_is_mounted_where_registry_policy_points(chart: Any) -> None:
    rendered = render(chart, {**S3, "policy": POLICY})
    config_map = rendered.one("ConfigMap")
    assert parse(yaml.safe_load(config_map["data"]["policy.yaml"])).immutable_rule("release/app", "v1") is not None
    assert rendered.volume("policy")["configMap"]["name"] == config_map["metadata"]["name"]
    path = rendered.env()["REGISTRY_POLICY"]["value"]
    assert path == rendered.mount("policy")["mountPath"] + "/policy.yaml"


def test_gc_cronjob_applies_the_policy_to_the_service_bucket(chart: Any) -> None:
    rendered = render(chart, {**S3, "policy": POLICY, "gc": {"enabled": True}})
    job = rendered.one("CronJob")["spec"]
    assert job["concurrencyPolicy"] == "Forbid"
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = build_parser().parse_args(container["args"])  # the real CLI accepts them
    assert (args.command, args.delete, args.settle_seconds, args.mark_seconds) == ("gc", True, 660, 900)
    env = {item["name"]: item for item in container["env"]}
    for name, item in rendered.env().items():  # the same bucket and policy file as the service
        if name.startswith(("REGISTRY_S3_", "REGISTRY_STORAGE", "REGISTRY_POLICY")):
            assert env[name] == item, name
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["policy"] == rendered.mount("policy")["mountPath"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["policy"] == rendered.volume("policy")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_gc_is_off_by_default_and_refused_on_filesystem_storage(chart: Any) -> None:
    assert "CronJob" not in render(chart, S3).kinds()
    with pytest.raises(helm.HelmError, match=r"needs storage\.type s3"):
        render(chart, {"storage": {"type": "filesystem"}, "gc": {"enabled": True}})
