"""The Helm chart in helm/trainyard, rendered with the real Helm engine (helm_python).

Every rendered core manifest is checked against Kubernetes 1.33's schemas
(kubernetes_validate, strict), the RayCluster against KubeRay's CRD, and bad values must
fail with a message that names the value.
"""
from __future__ import annotations

import base64
import copy
import os
import re
from pathlib import Path

import pytest
import yaml

helm_python = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "trainyard"
KUBE_VERSION = "1.33.0"
# read where they are, never copied into the repo; a clone elsewhere can point at them
CRDS = Path(os.environ.get("TRAINYARD_KUBERAY_CRDS") or REPO.parent / "shared" / "schemas" / "kuberay")
RELEASE, NAMESPACE = "ty", "ml"

# the value sets the chart must render cleanly
VALUE_SETS = {
    "defaults": {},
    "external-database": {
        "postgresql": {"enabled": False},
        "database": {"external": {
            "url": "postgresql+psycopg://ty:pw@db.example.com:5432/trainyard",
            "mlflowUrl": "postgresql+psycopg://ty:pw@db.example.com:5432/mlflow"}},
    },
    "gpu-off": {"ray": {"workers": {"gpu": {"enabled": False}}}},
    "ingress-on": {"server": {"ingress": {
        "enabled": True, "className": "nginx",
        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "hosts": [{"host": "trainyard.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "trainyard-tls", "hosts": ["trainyard.example.com"]}]}}},
    "existing-secrets-minio-a100": {
        "auth": {"existingSecret": "my-admin"},
        "ray": {"auth": {"existingSecret": "my-ray"}, "serviceAccountName": "ray-s3",
                "workers": {"gpu": {"acceleratorType": "A100", "gpusPerWorker": 8, "maxReplicas": 2,
                                    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}}}},
        "s3": {"existingSecret": "my-s3", "endpointUrl": "http://minio.storage:9000", "bucket": "ml-team"},
        "database": {"existingSecret": "my-db"},
        "networkPolicy": {"allowFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay"}}}]},
    },
    "everything-off": {
        "ray": {"workers": {"cpu": {"enabled": False}, "gpu": {"enabled": False}}},
        "mlflow": {"enabled": False, "externalUri": "https://mlflow.example.com"},
        "networkPolicy": {"enabled": False}, "rbac": {"create": False},
        "serviceAccount": {"create": False},
        "s3": {"accessKeyId": "AKIA", "secretAccessKey": "s3cr3t"},
    },
}


def render(values: dict | None = None, name: str = RELEASE) -> list[dict]:
    with helm_python.Chart.load(CHART) as chart:
        files = chart.render(values=values or {}, name=name, namespace=NAMESPACE)
    docs = []
    for path, text in files.items():
        if not path.endswith(".yaml"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, suffix=""):
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, (kind, suffix, [d["metadata"]["name"] for d in found])
    return found[0]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.fixture(scope="module")
def rendered():
    return {name: render(values) for name, values in VALUE_SETS.items()}


@pytest.fixture(scope="module")
def raycluster_schema():
    path = CRDS / "ray.io_rayclusters.yaml"
    if not path.exists():
        pytest.skip(f"KubeRay CRDs not found at {path} (read from ../shared/schemas/kuberay or "
                    "$TRAINYARD_KUBERAY_CRDS, never copied here)")
    # the CRD is 1 MB of YAML: the C loader reads it in a fraction of the pure-Python time
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


# ------------------------------------------------------------------ lint and schemas


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict_has_no_errors(name):
    result = helm_python.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE,
                              kube_version=f"v{KUBE_VERSION}")
    messages = _lint_messages(result)
    errors = [m for m in messages if m.get("severity", 0) >= 3]
    assert not errors, errors
    assert not result.get("errors"), result["errors"]


def test_lint_reports_bad_values_as_errors():
    """The control for the test above: lint's answer has the shape it reads."""
    result = helm_python.lint(CHART, {"sever": {}}, strict=True, kube_version=f"v{KUBE_VERSION}")
    errors = [m for m in _lint_messages(result) if m.get("severity", 0) >= 3]
    assert errors and "sever" in str(errors)


def _lint_messages(result) -> list[dict]:
    """Flatten helm_python.lint's answer into a list of {severity, path, err} dicts."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "severity" in {k.lower() for k in node}:
                found.append({k.lower(): v for k, v in node.items()})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(result)
    return found


@pytest.mark.parametrize("name", VALUE_SETS)
def test_core_manifests_are_valid_kubernetes(name, rendered):
    docs = [d for d in rendered[name] if d["apiVersion"] != "ray.io/v1"]
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except Exception as exc:  # kubernetes_validate raises several types
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")


@pytest.mark.parametrize("name", VALUE_SETS)
def test_raycluster_matches_the_kuberay_crd(name, rendered, raycluster_schema):
    cluster = one(rendered[name], "RayCluster")
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(raycluster_schema).iter_errors(cluster)]
    assert not errors, errors


def _unknown_fields(doc, schema, path="") -> list[str]:
    """Keys the CRD does not declare. The API server would silently prune them (CRD schemas
    allow unknown fields by default), so a typo such as `enableInTreeAutoScaling` would pass
    jsonschema and quietly turn autoscaling off."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(doc, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in doc.items():
            if props is not None and key in props:
                found += _unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += _unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None and path:  # the top level (apiVersion, kind, metadata) is the API's
                found.append(f"{path}.{key}")
    elif isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            found += _unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


@pytest.mark.parametrize("name", VALUE_SETS)
def test_raycluster_has_no_field_the_crd_would_prune(name, rendered, raycluster_schema):
    cluster = one(rendered[name], "RayCluster")
    assert _unknown_fields(cluster["spec"], raycluster_schema["properties"]["spec"], "spec") == []


def test_crd_checks_catch_mistakes(rendered, raycluster_schema):
    """The controls for the two CRD tests above: they do find errors."""
    cluster = copy.deepcopy(one(rendered["defaults"], "RayCluster"))
    cluster["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    del cluster["spec"]["workerGroupSpecs"][1]["groupName"]
    cluster["spec"]["enableInTreeAutoScaling"] = True
    errors = list(jsonschema.Draft7Validator(raycluster_schema).iter_errors(cluster))
    assert {tuple(e.absolute_path)[-1] for e in errors} >= {"maxReplicas", 1}
    assert _unknown_fields(cluster["spec"], raycluster_schema["properties"]["spec"], "spec") == [
        "spec.enableInTreeAutoScaling"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_name_fits_in_63_characters_and_is_unique(name, rendered):
    seen = set()
    for doc in rendered[name]:
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, key
        seen.add(key)
        assert len(doc["metadata"]["name"]) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_a_long_release_name_is_cut_to_63_characters():
    docs = render(name="a" * 60)
    names = [d["metadata"]["name"] for d in docs]
    assert all(len(n) <= 63 and not n.endswith("-") for n in names), names
    # the suffixes survive the cut, so the names stay distinct and readable
    assert any(n.endswith("-mlflow") for n in names) and any(n.endswith("-server") for n in names)
    assert len(one(docs, "RayCluster")["metadata"]["name"]) <= 40


# ------------------------------------------------------------------ what the chart wires


def test_defaults_render_every_component(rendered):
    docs = rendered["defaults"]
    kinds = {d["kind"] for d in docs}
    assert kinds >= {"RayCluster", "Deployment", "Service", "StatefulSet", "Secret", "ConfigMap",
                     "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy"}
    assert "Ingress" not in kinds
    assert {d["metadata"]["name"] for d in by_kind(docs, "Deployment")} == {"ty-trainyard-server", "ty-trainyard-mlflow"}


def test_raycluster_autoscales_with_token_auth(rendered):
    cluster = one(rendered["defaults"], "RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == 600
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert {"name": "dashboard", "containerPort": 8265} in head_container["ports"]
    token_ref = {"secretKeyRef": {"name": "ty-trainyard-ray-token", "key": "token"}}
    for container in [head_container, spec["autoscalerOptions"]] + [
            g["template"]["spec"]["containers"][0] for g in spec["workerGroupSpecs"]]:
        env = env_of(container)
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == token_ref
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    gpu = groups["gpu"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    assert "nvidia.com/gpu" not in str(groups["cpu"])
    # no accelerator type given: no custom resource
    assert "resources" not in groups["gpu"]["rayStartParams"]


def test_gpu_group_takes_its_type_count_and_node_selector(rendered):
    spec = one(rendered["existing-secrets-minio-a100"], "RayCluster")["spec"]
    gpu = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["maxReplicas"] == 2
    assert yaml.safe_load(gpu["rayStartParams"]["resources"]) == {"accelerator_type:A100": 1}
    pod = gpu["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}


def test_gpu_group_off(rendered):
    spec = one(rendered["gpu-off"], "RayCluster")["spec"]
    assert [g["groupName"] for g in spec["workerGroupSpecs"]] == ["cpu"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(spec)
    assert one(rendered["everything-off"], "RayCluster")["spec"]["workerGroupSpecs"] == []


def test_server_env_probes_and_secrets(rendered):
    docs = rendered["defaults"]
    deployment = one(docs, "Deployment", "-server")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:3] == ["python", "-m", "trainyard.api"]
    env = env_of(container)
    assert env["TRAINYARD_DB_URL"] == {"secretKeyRef": {"name": "ty-trainyard-database", "key": "url"}}
    assert env["TRAINYARD_MLFLOW_URI"] == "http://ty-trainyard-mlflow.ml.svc:5000"
    assert env["TRAINYARD_RAY_DASHBOARD_URL"] == "http://ty-trainyard-ray-head-svc.ml.svc:8265"
    assert env["TRAINYARD_STORAGE"] == "s3://trainyard/checkpoints"
    # token files are mounted from their Secrets where the env says
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert env["TRAINYARD_ADMIN_TOKEN_FILE"] == mounts["admin-token"] + "/token"
    assert volumes["admin-token"]["secret"]["secretName"] == "ty-trainyard-admin-token"
    assert env["TRAINYARD_RAY_TOKEN_FILE"] == mounts["ray-token"] + "/token"
    assert volumes["ray-token"]["secret"]["secretName"] == "ty-trainyard-ray-token"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"]["cpu"] == "250m"
    # no S3 keys given: no S3 secret, pods use their identity
    assert "AWS_ACCESS_KEY_ID" not in env
    assert not [s for s in by_kind(docs, "Secret") if s["metadata"]["name"].endswith("-s3")]


def test_database_urls_share_one_generated_password(rendered):
    secret = one(rendered["defaults"], "Secret", "-database")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    password = data["postgres-password"]
    assert len(password) == 40
    assert data["url"] == f"postgresql+psycopg://trainyard:{password}@ty-trainyard-postgresql.ml.svc:5432/trainyard"
    assert data["mlflow-url"].endswith(f":{password}@ty-trainyard-postgresql.ml.svc:5432/mlflow")
    sts = one(rendered["defaults"], "StatefulSet")
    env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
    assert env["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": "ty-trainyard-database", "key": "postgres-password"}}
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    init = one(rendered["defaults"], "ConfigMap", "-postgresql-init")
    assert "CREATE DATABASE mlflow" in init["data"]["10-mlflow.sh"]


def test_given_secrets_are_used_as_given():
    docs = render({"auth": {"adminToken": "adm1n"}, "ray": {"auth": {"token": "r4y"}},
                   "postgresql": {"password": "p@ss word"}})
    data = {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
            for s in by_kind(docs, "Secret")}
    assert data["ty-trainyard-admin-token"]["token"] == "adm1n"
    assert data["ty-trainyard-ray-token"]["token"] == "r4y"
    assert data["ty-trainyard-database"]["postgres-password"] == "p@ss word"
    # the URL carries the password escaped
    assert "p%40ss+word@" in data["ty-trainyard-database"]["url"]


def test_external_database(rendered):
    docs = rendered["external-database"]
    assert not by_kind(docs, "StatefulSet")
    assert not [n for n in by_kind(docs, "NetworkPolicy") if n["metadata"]["name"].endswith("-postgresql")]
    secret = one(docs, "Secret", "-database")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {"url": "postgresql+psycopg://ty:pw@db.example.com:5432/trainyard",
                    "mlflow-url": "postgresql+psycopg://ty:pw@db.example.com:5432/mlflow"}


def test_existing_secrets_are_referenced_not_created(rendered):
    docs = rendered["existing-secrets-minio-a100"]
    assert by_kind(docs, "Secret") == []
    server = one(docs, "Deployment", "-server")["spec"]["template"]["spec"]
    env = env_of(server["containers"][0])
    assert env["TRAINYARD_DB_URL"]["secretKeyRef"]["name"] == "my-db"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "my-s3", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["TRAINYARD_S3_ENDPOINT_URL"] == "http://minio.storage:9000"
    assert env["TRAINYARD_STORAGE"] == "s3://ml-team/checkpoints"
    volumes = {v["name"]: v for v in server["volumes"]}
    assert volumes["admin-token"]["secret"]["secretName"] == "my-admin"
    assert volumes["ray-token"]["secret"]["secretName"] == "my-ray"
    ray_spec = one(docs, "RayCluster")["spec"]
    assert ray_spec["headGroupSpec"]["template"]["spec"]["serviceAccountName"] == "ray-s3"
    assert all(g["template"]["spec"]["serviceAccountName"] == "ray-s3" for g in ray_spec["workerGroupSpecs"])
    ray_env = env_of(ray_spec["headGroupSpec"]["template"]["spec"]["containers"][0])
    assert ray_env["RAY_AUTH_TOKEN"]["secretKeyRef"]["name"] == "my-ray"
    assert ray_env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "my-s3"


def test_mlflow_server(rendered):
    docs = rendered["existing-secrets-minio-a100"]
    container = one(docs, "Deployment", "-mlflow")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--artifacts-destination=s3://ml-team/mlflow" in args
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args
    allowed = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert "ty-trainyard-mlflow.ml.svc:*" in allowed
    env = env_of(container)
    assert env["MLFLOW_BACKEND_STORE_URI"] == {"secretKeyRef": {"name": "my-db", "key": "mlflow-url"}}
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio.storage:9000"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    # MLflow off: the server points at the external one, and nothing else is made for it
    off = rendered["everything-off"]
    assert not [d for d in off if "mlflow" in d["metadata"]["name"]]
    env = env_of(one(off, "Deployment", "-server")["spec"]["template"]["spec"]["containers"][0])
    assert env["TRAINYARD_MLFLOW_URI"] == "https://mlflow.example.com"


def test_ingress(rendered):
    ingress = one(rendered["ingress-on"], "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "trainyard.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "ty-trainyard-server", "port": {"name": "http"}}
    assert ingress["spec"]["tls"] == [{"hosts": ["trainyard.example.com"], "secretName": "trainyard-tls"}]


def test_rbac_is_read_only_and_bound_to_the_server(rendered):
    docs = rendered["defaults"]
    role = one(docs, "Role")
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}
    assert any("rayclusters" in r["resources"] for r in role["rules"])
    binding = one(docs, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ty-trainyard", "namespace": "ml"}]
    pod = one(docs, "Deployment", "-server")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ty-trainyard"
    off = rendered["everything-off"]
    assert not by_kind(off, "Role") and not by_kind(off, "ServiceAccount")
    assert one(off, "Deployment", "-server")["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_network_policies_admit_only_the_release(rendered):
    docs = rendered["defaults"]
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"ty-trainyard-ray", "ty-trainyard-mlflow", "ty-trainyard-postgresql"}
    release = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "trainyard",
                                               "app.kubernetes.io/instance": "ty"}}}
    ray = policies["ty-trainyard-ray"]
    assert ray["podSelector"] == {"matchLabels": {"ray.io/cluster": "ty-trainyard-ray"}}
    assert ray["ingress"] == [{"from": [release]}]
    assert policies["ty-trainyard-mlflow"]["ingress"][0]["from"] == [release]
    # every pod the policy admits really carries the release labels
    cluster = one(docs, "RayCluster")["spec"]
    for template in [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]:
        assert release["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    server = one(docs, "Deployment", "-server")["spec"]["template"]["metadata"]["labels"]
    assert release["podSelector"]["matchLabels"].items() <= server.items()
    # extra peers are added, not substituted
    extra = {p["metadata"]["name"]: p["spec"] for p in by_kind(rendered["existing-secrets-minio-a100"], "NetworkPolicy")}
    assert len(extra["ty-trainyard-ray"]["ingress"][0]["from"]) == 2
    assert not by_kind(rendered["everything-off"], "NetworkPolicy")


# ------------------------------------------------------------------ bad values


def _with(path: str, value) -> dict:
    values: dict = {}
    node = values
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return values


@pytest.mark.parametrize("path,value,pattern", [
    ("ray.workers.gpu.minReplicas", -1, r"ray/workers/gpu/minReplicas.*minimum"),
    ("ray.workers.cpu.maxReplicas", -2, r"ray/workers/cpu/maxReplicas.*minimum"),
    ("ray.workers.cpu.replicas", -1, r"ray/workers/cpu/replicas.*minimum"),
    ("mlflow.replicas", -1, r"mlflow/replicas.*minimum"),
    ("server.replicas", 2, r"server/replicas.*maximum"),
    ("ray.workers.gpu.gpusPerWorker", 0, r"gpusPerWorker.*minimum"),
    ("ray.autoscaler.upscalingMode", "Fast", r"upscalingMode"),
    ("s3.bucket", "x", r"s3/bucket"),
    ("server.oidc.issuer", "http://idp.example.com", r"server/oidc/issuer"),
    ("server.oidc.consoleScopes", "email profile", r"server/oidc/consoleScopes"),
    ("server.oidc.consoleClientId", "has space", r"server/oidc/consoleClientId"),
])
def test_schema_rejects_bad_values(path, value, pattern):
    with pytest.raises(helm_python.HelmValuesError) as info:
        render(_with(path, value))
    assert re.search(pattern, str(info.value), re.S), str(info.value)


def test_single_sign_on_reaches_the_server_only_when_configured(rendered):
    def server_env(docs) -> dict:
        return env_of(one(docs, "Deployment", "-server")["spec"]["template"]["spec"]["containers"][0])

    assert not any(k.startswith("TRAINYARD_OIDC_") for k in server_env(render()))
    env = server_env(render({"server": {"oidc": {"issuer": "https://idp.example.com", "audience": "trainyard",
                                                 "groupRoles": "ml-team=vision:member,ops=*:admin"}}}))
    assert env["TRAINYARD_OIDC_ISSUER"] == "https://idp.example.com" and env["TRAINYARD_OIDC_AUDIENCE"] == "trainyard"
    assert env["TRAINYARD_OIDC_GROUP_ROLES"] == "ml-team=vision:member,ops=*:admin"
    assert env["TRAINYARD_OIDC_USER_CLAIM"] == "email" and "TRAINYARD_OIDC_JWKS_URL" not in env
    assert "TRAINYARD_OIDC_CLIENT_ID" not in env and "TRAINYARD_OIDC_SCOPES" not in env
    env = server_env(render({"server": {"oidc": {"issuer": "https://idp.example.com", "audience": "console",
                                                 "consoleClientId": "console"}}}))
    assert (env["TRAINYARD_OIDC_CLIENT_ID"], env["TRAINYARD_OIDC_SCOPES"]) == ("console", "openid email profile")
    with pytest.raises(Exception, match="server.oidc.audience is required"):
        render({"server": {"oidc": {"issuer": "https://idp.example.com"}}})


def test_schema_rejects_unknown_top_level_key():
    with pytest.raises(helm_python.HelmValuesError) as info:
        render({"severs": {"replicas": 1}})
    message = str(info.value)
    assert "additional properties" in message.lower() and "severs" in message, message


def test_schema_rejects_unknown_nested_key():
    with pytest.raises(helm_python.HelmValuesError, match="maxReplica"):
        render({"ray": {"workers": {"gpu": {"maxReplica": 3}}}})


# ids that are not the bare word "gpu": conftest skips tests with a `gpu` keyword without CUDA
@pytest.mark.parametrize("group", ["cpu", "gpu"], ids=["cpu-group", "gpu-group"])
def test_min_above_max_fails_with_a_clear_message(group):
    values = {"ray": {"workers": {group: {"minReplicas": 5, "maxReplicas": 2, "replicas": 5}}}}
    with pytest.raises(helm_python.HelmError) as info:
        render(values)
    assert f"ray.workers.{group}: minReplicas (5) must be <= maxReplicas (2)" in str(info.value)


def test_min_above_max_is_fine_for_a_disabled_group():
    render({"ray": {"workers": {"gpu": {"enabled": False, "minReplicas": 5, "maxReplicas": 2}}}})


def test_replicas_outside_min_max_fails():
    with pytest.raises(helm_python.HelmError, match=r"ray.workers.cpu: replicas \(9\) must lie between"):
        render({"ray": {"workers": {"cpu": {"replicas": 9}}}})


@pytest.mark.parametrize("values,message", [
    ({"postgresql": {"enabled": False}}, "database.external.url: required when postgresql.enabled is false"),
    ({"postgresql": {"enabled": False}, "database": {"external": {"url": "postgresql://h/db"}}},
     "database.external.mlflowUrl: required"),
    ({"mlflow": {"enabled": False}}, "mlflow.externalUri: required when mlflow.enabled is false"),
    ({"s3": {"accessKeyId": "AKIA"}}, "s3.secretAccessKey: required with s3.accessKeyId"),
])
def test_missing_companion_values_fail_with_the_fix(values, message):
    with pytest.raises(helm_python.HelmError) as info:
        render(values)
    assert message in str(info.value)


# ------------------------------------------------------------------ values.yaml itself


def test_every_value_has_a_doc_comment():
    """helm-docs style: each key in values.yaml sits under a comment block with `# --`."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    list_indent = None  # inside a default list of maps, whose keys are data, not values
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if list_indent is not None and line.strip() and indent <= list_indent and not line.lstrip().startswith("- "):
            list_indent = None
        if line.lstrip().startswith("- "):
            list_indent = indent if list_indent is None else min(list_indent, indent)
            continue
        match = re.match(r"^(\s*)([A-Za-z0-9_.-]+):", line)
        if not match or list_indent is not None:
            continue
        # walk up the comment block right above the key
        j, block = i - 1, []
        while j >= 0 and lines[j].strip().startswith("#"):
            block.append(lines[j].strip())
            j -= 1
        if not any(c.startswith("# --") for c in block):
            missing.append(f"line {i + 1}: {line.strip()}")
    assert not missing, "values without a `# --` comment:\n" + "\n".join(missing)


def test_schema_covers_every_default_value():
    """values.schema.json forbids unknown keys, so each default must be declared in it."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(defaults, schema)

    def walk(value, node, path):
        if not isinstance(value, dict) or node.get("additionalProperties") is not False:
            return
        for key, sub in value.items():
            assert key in node.get("properties", {}), f"{path}{key} is not in values.schema.json"
            walk(sub, node["properties"][key], f"{path}{key}.")

    walk(defaults, schema, "")
