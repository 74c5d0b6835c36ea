"""The Helm chart (deploy/helm/controlroom), offline: ``helm lint``, ``helm template`` with the
staging defaults and with values-production.yaml, every rendered manifest checked against the
Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail too), and the shape that
matters: the commands are compose's, beat is a singleton, migrations are a hook, secrets come only
from existing Secrets, mandatory values fail with one sentence.

helm is built from its Go module by scripts/helm_tool.py on first use (about 4 minutes on two
cores, hence ``slow``), then reused from ~/.cache/controlroom/helm."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "deploy" / "helm" / "controlroom"
PRODUCTION = CHART / "values-production.yaml"
HELM_TOOL = REPO / "scripts" / "helm_tool.py"
# helm 3.22 is built on Kubernetes 1.37's client (its default .Capabilities.KubeVersion), and
# kubernetes-validate ships the schemas of that release.
KUBE_VERSION = "1.37.0"
PREFIX = "cr-controlroom"  # release "cr", chart "controlroom"
# Deployment suffix of each queue's worker: compose's service names.
WORKERS = {"default": "worker", "sql": "sql-worker", "spark": "spark-worker"}
PROFILES = {"default": (), "production": ("-f", str(PRODUCTION))}


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned helm binary, from the tool (which builds it once into its cache)."""
    result = subprocess.run([sys.executable, str(HELM_TOOL)], capture_output=True, text=True, timeout=3600,
                            check=False)
    if result.returncode != 0:
        pytest.fail(f"scripts/helm_tool.py could not provide helm:\n{result.stderr}")
    return result.stdout.strip()


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    """The chart's manifests with these extra arguments (values files, --set …)."""
    result = run_helm(helm, "template", "cr", str(CHART), "--namespace", "controlroom",
                      "--kube-version", KUBE_VERSION, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def values(profile: str) -> dict[str, Any]:
    """values.yaml with the profile's file over it, merged as helm does (maps deep, lists replaced)."""
    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        for key, value in over.items():
            base[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
                else value
        return base

    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    return merge(merged, yaml.safe_load(PRODUCTION.read_text())) if profile == "production" else merged


@pytest.fixture(scope="module")
def rendered(helm: str) -> dict[str, list[dict[str, Any]]]:
    return {profile: render(helm, *args) for profile, args in PROFILES.items()}


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} rendered"
    return matches[0]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(doc)["env"]}


def pods(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "Job")]


def compose_command(service: str) -> list[str]:
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
    return compose["services"][service]["command"]


def dockerfile_cmd() -> list[str]:
    """The app image's CMD (gunicorn), from the Dockerfile's first CMD instruction."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("CMD "))
    return yaml.safe_load(line.removeprefix("CMD "))


@pytest.mark.parametrize("profile", PROFILES)
def test_lint(helm: str, profile: str) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), *PROFILES[profile])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_every_manifest_matches_the_kubernetes_schemas(rendered, profile: str) -> None:
    docs = rendered[profile]
    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not problems, "\n".join(problems)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Job", "ServiceAccount", "PersistentVolumeClaim"} <= kinds
    if profile == "production":
        assert {"Ingress", "PodDisruptionBudget"} <= kinds


def test_the_schema_check_rejects_a_broken_manifest(rendered) -> None:
    """The validation above can fail: a wrong type and a misspelt field are both caught."""
    web = find(rendered["default"], "Deployment", f"{PREFIX}-web")
    wrong_type = copy.deepcopy(web)
    wrong_type["spec"]["replicas"] = "three"
    misspelt = copy.deepcopy(web)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    for doc in (wrong_type, misspelt):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("profile", PROFILES)
def test_web_runs_gunicorn_on_8000_with_probes(rendered, profile: str) -> None:
    docs, settings = rendered[profile], values(profile)
    web = find(docs, "Deployment", f"{PREFIX}-web")
    assert web["spec"]["replicas"] == settings["web"]["replicas"]
    app = container(web)
    assert app["command"] == dockerfile_cmd()
    assert app["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    host = settings["django"]["allowedHosts"][0]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = app[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, 8000), probe
        # Django's host check must pass, and the probe must not be redirected to https.
        assert {"name": "Host", "value": host} in get["httpHeaders"]
        assert {"name": "X-Forwarded-Proto", "value": "https"} in get["httpHeaders"]
    service = find(docs, "Service", PREFIX)
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_replicas_follow_the_values(helm: str) -> None:
    docs = render(helm, "-f", str(PRODUCTION), "--set", "web.replicas=5", "--set", "workers.default.replicas=4",
                  "--set", "workers.sql.replicas=3", "--set", "workers.spark.replicas=0")
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in docs if d["kind"] == "Deployment"}
    assert replicas == {f"{PREFIX}-web": 5, f"{PREFIX}-worker": 4, f"{PREFIX}-sql-worker": 3,
                        f"{PREFIX}-spark-worker": 0, f"{PREFIX}-beat": 1}


@pytest.mark.parametrize("profile", PROFILES)
def test_one_worker_deployment_per_queue_with_composes_command(rendered, profile: str) -> None:
    docs, settings = rendered[profile], values(profile)
    for queue, suffix in WORKERS.items():
        worker = find(docs, "Deployment", f"{PREFIX}-{suffix}")
        assert worker["spec"]["replicas"] == settings["workers"][queue]["replicas"]
        command = container(worker)["command"]
        assert command == compose_command(suffix)
        assert command[command.index("--queues") + 1] == queue
        node = settings["workers"][queue]["nodeName"] or "celery"
        assert f"-d {node}@$HOSTNAME" in container(worker)["livenessProbe"]["exec"]["command"][-1]
        image = settings["sparkImage" if queue == "spark" else "image"]
        assert container(worker)["image"].startswith(image["repository"] + ":")
        # Only the spark worker's driver is reached by a cluster's executors.
        assert ("SPARK_DRIVER_HOST" in env_of(worker)) == (queue == "spark")
    spark_env = env_of(find(docs, "Deployment", f"{PREFIX}-spark-worker"))
    assert spark_env["SPARK_DRIVER_HOST"]["value"] == "$(POD_IP)"
    assert spark_env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_a_disabled_worker_is_not_rendered_and_needs_no_image(helm: str) -> None:
    docs = render(helm, "--set", "workers.spark.enabled=false", "--set", "sparkImage.repository=")
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert names == {f"{PREFIX}-web", f"{PREFIX}-worker", f"{PREFIX}-sql-worker", f"{PREFIX}-beat"}


@pytest.mark.parametrize("profile", PROFILES)
def test_beat_is_one_replica_replaced_by_recreate(helm: str, rendered, profile: str) -> None:
    for docs in (rendered[profile], render(helm, *PROFILES[profile], "--set", "beat.replicas=3")):
        beat = find(docs, "Deployment", f"{PREFIX}-beat")
        assert beat["spec"]["replicas"] == 1
        assert beat["spec"]["strategy"] == {"type": "Recreate"}
        assert container(beat)["command"] == compose_command("beat")


@pytest.mark.parametrize("profile", PROFILES)
def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(rendered, profile: str) -> None:
    job = find(rendered[profile], "Job", f"{PREFIX}-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert container(job)["command"] == compose_command("migrate") == ["python", "manage.py", "migrate", "--noinput"]
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    # A hook runs before the release's objects exist: it may not need the chart's own.
    assert "serviceAccountName" not in spec
    assert not any("persistentVolumeClaim" in v for v in spec["volumes"])


def _secret_names(docs: list[dict[str, Any]]) -> set[str]:
    names = set()
    for doc in pods(docs):
        for entry in container(doc)["env"]:
            if ref := entry.get("valueFrom", {}).get("secretKeyRef"):
                names.add(ref["name"])
        for volume in doc["spec"]["template"]["spec"]["volumes"]:
            names.update(s["secret"]["name"] for s in volume.get("projected", {}).get("sources", []))
            if "secret" in volume:
                names.add(volume["secret"]["secretName"])
    return names


@pytest.mark.parametrize("profile", PROFILES)
def test_secrets_come_only_from_existing_secrets(rendered, profile: str) -> None:
    docs, settings = rendered[profile], values(profile)
    assert not [d for d in docs if d["kind"] == "Secret"]
    named = {v["existingSecret"] for v in settings.values() if isinstance(v, dict) and v.get("existingSecret")}
    named |= set(settings["workspaceSecrets"]["existingSecrets"])
    assert _secret_names(docs) == named
    for doc in pods(docs):
        mounts = {m["name"]: m["mountPath"] for m in container(doc)["volumeMounts"]}
        files = {f"{mounts['controlroom-secrets']}/{item['path']}"
                 for volume in doc["spec"]["template"]["spec"]["volumes"] if volume["name"] == "controlroom-secrets"
                 for source in volume["projected"]["sources"] for item in source["secret"]["items"]}
        for name, entry in env_of(doc).items():
            if name.endswith("_FILE"):
                assert entry["value"] in files, f"{name} names a file no Secret provides"
            elif any(word in name for word in ("PASSWORD", "SECRET_KEY", "TOKEN", "ACCESS_KEY")):
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name} is not from a Secret"
        # Workspace references read /run/secrets/workspace only, never the server's own secrets.
        assert env_of(doc)["SECRET_FILE_DIRS"]["value"] == "/run/secrets/workspace"
        assert mounts["controlroom-secrets"] != "/run/secrets/workspace"


def test_production_points_at_the_external_services(rendered) -> None:
    settings = values("production")
    env = env_of(find(rendered["production"], "Deployment", f"{PREFIX}-web"))
    db, broker, store, oidc = (settings[k] for k in ("postgresql", "valkey", "artifactStore", "oidc"))
    assert env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": db["existingSecret"], "key": "password"}
    assert env["DATABASE_URL"]["value"] == (
        f"postgres://{db['username']}:$(DATABASE_PASSWORD)@{db['host']}:5432/{db['database']}?sslmode=require")
    assert env["CELERY_BROKER_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == broker["existingSecret"]
    assert env["CELERY_BROKER_URL"]["value"] == f"rediss://:$(CELERY_BROKER_PASSWORD)@{broker['host']}:6379/0"
    assert env["ARTIFACT_STORE_URL"]["value"] == f"s3://{store['bucket']}/{store['prefix']}"
    assert env["ARTIFACT_STORE_S3_ENDPOINT"]["value"] == store["endpoint"]
    assert env["ARTIFACT_STORE_S3_SECRET_KEY_FILE"]["value"] == "/run/secrets/controlroom/artifacts_s3_secret_key"
    assert env["OIDC_ISSUER"]["value"] == oidc["issuer"]
    assert env["OIDC_CLIENT_ID"]["value"] == oidc["clientId"]
    assert env["OIDC_CLIENT_SECRET_FILE"]["value"] == "/run/secrets/controlroom/oidc_client_secret"
    assert env["CONTROLROOM_SECRET_TRINO_SERVICE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == \
        settings["trino"]["existingSecret"]
    # gunicorn's workers share their metrics folder inside the pod, never on the shared /data.
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith("/tmp/")


def test_whole_urls_can_come_from_the_secrets(helm: str) -> None:
    docs = render(helm, "--set", "postgresql.urlKey=uri", "--set", "postgresql.host=",
                  "--set", "valkey.existingSecret=controlroom-valkey", "--set", "valkey.urlKey=url")
    web = find(docs, "Deployment", f"{PREFIX}-web")
    env = env_of(web)
    assert env["DATABASE_URL_FILE"]["value"] == "/run/secrets/controlroom/database_url"
    assert env["CELERY_BROKER_URL_FILE"]["value"] == "/run/secrets/controlroom/broker_url"
    assert not {"DATABASE_URL", "DATABASE_PASSWORD", "CELERY_BROKER_URL"} & set(env)
    sources = next(v for v in web["spec"]["template"]["spec"]["volumes"] if v["name"] == "controlroom-secrets")
    items = {(s["secret"]["name"], i["key"], i["path"]) for s in sources["projected"]["sources"]
             for i in s["secret"]["items"]}
    assert {("controlroom-postgresql", "uri", "database_url"), ("controlroom-valkey", "url", "broker_url")} <= items


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_run_as_non_root_with_resources(rendered, profile: str) -> None:
    for doc in pods(rendered[profile]):
        spec, name = doc["spec"]["template"]["spec"], doc["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name  # the image's user (Dockerfile)
        assert spec["automountServiceAccountToken"] is False, name
        app = container(doc)
        assert app["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert app["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        assert {"cpu", "memory"} <= set(app["resources"]["requests"]), name
        assert "memory" in app["resources"]["limits"], name


def test_the_probe_host_follows_allowed_hosts(helm: str) -> None:
    docs = render(helm, "--set-json", 'django.allowedHosts=[".example.org", "other.example.org"]')
    web = find(docs, "Deployment", f"{PREFIX}-web")
    assert {"name": "Host", "value": "example.org"} in container(web)["readinessProbe"]["httpGet"]["httpHeaders"]
    assert env_of(web)["ALLOWED_HOSTS"]["value"] == ".example.org,other.example.org"


@pytest.mark.parametrize(("args", "message"), [
    (("--set", "image.repository="), "image.repository is required"),
    (("--set", "sparkImage.repository="), "sparkImage.repository is required"),
    (("--set", "django.existingSecret="), "django.existingSecret is required"),
    (("--set-json", "django.allowedHosts=[]"), "django.allowedHosts is required"),
    (("--set", "postgresql.existingSecret="), "postgresql.existingSecret is required"),
    (("--set", "postgresql.host="), "postgresql.host is required"),
    (("--set", "artifactStore.bucket="), "artifactStore.bucket is required"),
    (("--set", "oidc.issuer=https://idp.example.com"), "oidc.existingSecret is required"),
    (("--set", "ingress.enabled=true"), "ingress.hosts is required"),
    (("--set-json", 'workspaceSecrets.env=[{"name": "DATABASE_URL", "secret": "s", "key": "k"}]'),
     "must start with CONTROLROOM_SECRET_"),
])
def test_a_missing_mandatory_value_fails_with_a_clear_message(helm: str, args: tuple[str, ...], message: str) -> None:
    result = run_helm(helm, "template", "cr", str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_tool_reuses_its_build(helm: str) -> None:
    began = time.monotonic()
    result = subprocess.run([sys.executable, str(HELM_TOOL), "version", "--short"], capture_output=True, text=True,
                            timeout=60, check=True)
    assert time.monotonic() - began < 10
    assert result.stdout.startswith("v3.22.")
    assert "building" not in result.stderr
