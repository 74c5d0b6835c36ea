"""Ports and healthchecks of compose/docker-compose.yml, against compose/README.md's "Ports" table.

What each service listens on is read from its own configuration (its command's flags, the files it
mounts, the Dockerfile's CMD, the image's documented default where nothing overrides it), never from
its healthcheck; then every healthcheck must probe a port (and, for HTTP, a path) that its target
listens on, and the README's table must say the same. Every published port must bind as the table
documents: host interface, host port variable and its default, container port. Only the documented
public services may listen on every interface of the host. Rendered by docker-compose 1.29 as in
tests/test_compose.py; no Docker engine.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from tests.test_compose import COMPOSE_DIR, COMPOSE_FILE, ENV_EXAMPLE, REPO_ROOT, _properties, render

README = COMPOSE_DIR / "README.md"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PUBLIC = {"web"}  # published on every interface of the host; the rest on loopback, or not at all
LOOPBACK = ("127.0.0.1", "localhost")
# The path each HTTP healthcheck must ask (a prefix), where the service's own docs say it answers.
HEALTH_PATHS = {"web": "/healthz", "prometheus": "/-/ready", "mlflow": "/health", "grafana": "/api/health",
                "trino": "/v1/info", "spark-master": "/json/", "spark-cluster-worker": "/json/"}
# Celery processes listen on nothing: their healthchecks go through the broker (tests/test_compose*.py).
THROUGH_BROKER = ("worker", "sql-worker", "spark-worker", "beat")
# `weed server`'s defaults for the components this stack does not move (weed's -help).
WEED_DEFAULTS = {"master.port": 9333, "volume.port": 8080, "filer.port": 8888}
# The variables of the published ports, as .env.example sets them (to their defaults).
PORT_VARIABLES = ("CONTROLROOM_HTTP_PORT", "PROMETHEUS_BIND_ADDRESS", "PROMETHEUS_PORT", "MLFLOW_BIND_ADDRESS",
                  "MLFLOW_PORT", "GRAFANA_BIND_ADDRESS", "GRAFANA_PORT")


@pytest.fixture(scope="module")
def config() -> dict:
    return render()


def _value(command: list[str], name: str) -> str | None:
    """``name=value`` or ``name value`` in a command; None when absent."""
    for index, arg in enumerate(command):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return command[index + 1]
    return None


def _mounted(service: dict, container_path: str) -> Path:
    """The host file behind a container path of ``service`` (a bind mount of it or of a folder)."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return Path(source) / Path(container_path).relative_to(target)
    raise AssertionError(f"{container_path} is not mounted")


def _trino_http(service: dict) -> tuple[int, str]:
    """(port, scheme) the image's health-check script asks: it reads config.properties the same way."""
    props = _properties(_mounted(service, "/etc/trino/config.properties"))
    if props.get("http-server.http.enabled", "true") == "false":
        return int(props.get("http-server.https.port", "8443")), "https"
    return int(props.get("http-server.http.port", "8080")), "http"


def listening(config: dict, name: str) -> dict[int, bool]:
    """{port: loopback only} for what ``name`` listens on, from its own configuration."""
    service = config["services"][name]
    command, env = service.get("command") or [], service.get("environment") or {}
    if name == "postgres":
        return {int(env.get("PGPORT", 5432)): False}  # the image's default, not moved
    if name == "valkey":
        return {int(_value(command, "--port") or 6379): False}
    if name == "seaweedfs":
        inner = _value(command, "-ip.bind") in LOOPBACK
        ports = {int(_value(command, f"-{flag}") or default): inner for flag, default in WEED_DEFAULTS.items()}
        outer = _value(command, "-s3.ip.bind") in LOOPBACK
        return ports | {int(_value(command, f"-{flag}")): outer for flag in ("s3.port", "s3.port.iceberg")}
    if name == "web":  # no command of its own: the image's CMD
        cmd = re.search(r"^CMD (\[.*?\])$", DOCKERFILE.read_text().replace("\\\n", ""), re.MULTILINE)
        host, port = _value(yaml.safe_load(cmd.group(1)), "--bind").rsplit(":", 1)
        return {int(port): host in LOOPBACK}
    if name == "trino":
        props = _properties(_mounted(service, "/etc/trino/config.properties"))
        ports = {}
        if props.get("http-server.http.enabled", "true") != "false":
            ports[int(props.get("http-server.http.port", "8080"))] = False
        if props.get("http-server.https.enabled") == "true":
            ports[int(props["http-server.https.port"])] = False
        return ports
    if name == "prometheus":
        host, port = (_value(command, "--web.listen-address") or ":9090").rsplit(":", 1)
        return {int(port): host in LOOPBACK}
    if name == "mlflow":
        return {int(_value(command, "--port") or 5000): (_value(command, "--host") or "127.0.0.1") in LOOPBACK}
    if name == "grafana":
        return {int(env.get("GF_SERVER_HTTP_PORT", 3000)): False}
    if name == "spark-master":
        return {int(_value(command, "--port")): False, int(_value(command, "--webui-port")): False}
    if name == "spark-cluster-worker":
        return {int(_value(command, "--webui-port")): False}
    if name == "spark-connect":
        props = _properties(_mounted(service, _value(command, "--properties-file")))
        return {int(props["spark.connect.grpc.binding.port"]):
                props["spark.connect.grpc.binding.address"] in LOOPBACK}
    return {}


def _owner(config: dict, name: str, host: str) -> str:
    """The service a probe of ``host`` reaches from ``name``'s container."""
    if host in LOOPBACK:
        mode = config["services"][name].get("network_mode", "")
        return mode.split(":", 1)[1] if mode.startswith("service:") else name
    assert host in config["services"], f"{name} probes {host}, which is no service"
    return host


def probes(config: dict, name: str) -> list[tuple[str, int, str]]:
    """(service, port, path) for each thing ``name``'s healthcheck asks ("" where not HTTP)."""
    service = config["services"][name]
    test = service["healthcheck"]["test"]
    words = test[1:] if test[0] in ("CMD", "CMD-SHELL") else test
    text = " ".join(words)
    found = [(_owner(config, name, host), int(port), path or "/")
             for host, port, path in re.findall(r"https?://([A-Za-z0-9.-]+):(\d+)(/[^\s'\"]*)?", text)]
    found += [(_owner(config, name, host), int(port), "")
              for host, port in re.findall(r"\('([A-Za-z0-9.-]+)', (\d+)\)", text)]
    if "pg_isready" in text:
        found.append((name, int(_value(text.split(), "-p") or 5432), ""))
    if "valkey-cli" in text:
        found.append((name, int(_value(text.split(), "-p") or 6379), ""))
    if "/usr/lib/trino/bin/health-check" in text:
        found.append((name, _trino_http(service)[0], "/v1/info"))
    return found


def probe_problems(config: dict) -> list[str]:
    """Every healthcheck that asks a port or path its target does not serve."""
    problems = []
    for name, service in config["services"].items():
        if "healthcheck" not in service:
            continue
        found = probes(config, name)
        if name in THROUGH_BROKER:
            problems += [f"{name}: listens on nothing, yet probes {probe}" for probe in found]
            continue
        if not found:
            problems.append(f"{name}: its healthcheck probes no port")
        for owner, port, _path in found:
            ports = listening(config, owner)
            if port not in ports:
                problems.append(f"{name}: probes {owner}:{port}, but {owner} listens on {sorted(ports)}")
            elif ports[port] and owner != name:
                problems.append(f"{name}: probes {owner}:{port}, which listens on its own loopback only")
        expected = HEALTH_PATHS.get(name)
        if expected and not any(path.startswith(expected) for _, _, path in found):
            problems.append(f"{name}: probes {[p for _, _, p in found]}, not {expected}")
    return problems


def readme_ports() -> dict[str, tuple[dict[int, bool], str | None]]:
    """compose/README.md's "Ports" table: {service: ({port: loopback only}, host binding or None)}."""
    section = README.read_text().split("\n## Ports\n", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        ports = {int(port): bool(loopback) for loopback, port in re.findall(r"`(127\.0\.0\.1:)?(\d+)`", cells[1])}
        binding = re.fullmatch(r"`(.+)`", cells[2])
        for name in re.findall(r"`([a-z0-9-]+)`", cells[0]):
            assert name not in table, f"{name} documented twice"
            table[name] = (ports, binding.group(1) if binding else None)
    return table


_BINDING = re.compile(r"(?:(?P<ip>\$\{[^}]*\}|[0-9.]+):)?(?P<port>\$\{[^}]*\}|\d+):(?P<target>\d+)")


def compose_bindings(raw: dict, name: str) -> list[tuple[str, int]]:
    """(host binding, container port) of each of ``name``'s ports as written in the compose file;
    a mapping without a host interface binds every interface (0.0.0.0)."""
    bindings = []
    for entry in raw["services"][name].get("ports", []):
        found = _BINDING.fullmatch(str(entry))
        assert found, f"{name}: {entry!r} is not host:port:container_port"
        bindings.append((f"{found['ip'] or '0.0.0.0'}:{found['port']}", int(found["target"])))  # noqa: S104
    return bindings


def _interpolate(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: values.get(m[1]) or m[2], text)


def rendered_bindings(config: dict, name: str) -> list[tuple[str, int, int]]:
    """(host interface, host port, container port) of each published port, as rendered."""
    found = []
    for entry in config["services"][name].get("ports", []):
        if isinstance(entry, dict):
            found.append((entry.get("host_ip", "0.0.0.0"), int(entry["published"]), int(entry["target"])))  # noqa: S104
        else:
            ip, published, target = str(entry).split("/")[0].rsplit(":", 2)
            found.append((ip, int(published), int(target)))
    return found


def _env_values(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _documented_binding(name: str, values: dict[str, str]) -> list[tuple[str, int, int]]:
    ports, binding = readme_ports()[name]
    if binding is None:
        return []
    ip, port = _interpolate(binding, values).rsplit(":", 1)
    published = [p for p, loopback in ports.items() if not loopback]
    assert len(published) == 1, f"{name}: which of {sorted(ports)} is published?"
    return [(ip, int(port), published[0])]


# --- what each service listens on, and what its healthcheck asks -----------------------------------


def test_readme_documents_every_service(config):
    assert set(readme_ports()) == set(config["services"])


@pytest.mark.parametrize("name", sorted(readme_ports()))
def test_each_service_listens_where_the_readme_says(config, name):
    assert listening(config, name) == readme_ports()[name][0]


def test_the_derivation_reads_the_services_own_configuration(config):
    """Spot checks of the ports everyone knows, so a broken derivation cannot agree with a broken README."""
    known = {"web": 8000, "prometheus": 9090, "mlflow": 5000, "grafana": 3000, "trino": 8443, "postgres": 5432,
             "valkey": 6379, "spark-connect": 15002, "seaweedfs": 8333}
    for name, port in known.items():
        assert port in listening(config, name), name


def test_every_healthcheck_probes_where_its_service_listens(config):
    assert probe_problems(config) == []
    probed = {name: probes(config, name) for name in ("web", "prometheus", "mlflow", "grafana", "trino")}
    assert probed == {"web": [("web", 8000, "/healthz")], "prometheus": [("prometheus", 9090, "/-/ready")],
                      "mlflow": [("mlflow", 5000, "/health")], "grafana": [("grafana", 3000, "/api/health")],
                      "trino": [("trino", 8080, "/v1/info")]}


def _with(config: dict, name: str, change) -> dict:
    changed = copy.deepcopy(config)
    change(changed["services"][name])
    return changed


def test_a_healthcheck_on_the_wrong_port_or_path_is_caught(config):
    def moved_probe(service):
        service["healthcheck"]["test"] = [w.replace(":5000/", ":5001/") for w in service["healthcheck"]["test"]]

    def moved_server(service):
        service["command"][service["command"].index("--port") + 1] = "5001"

    def wrong_path(service):
        service["healthcheck"]["test"] = [w.replace("/-/ready", "/-/healthy") for w in service["healthcheck"]["test"]]

    def bound_to_loopback(service):
        service["command"] = ["--web.listen-address=127.0.0.1:9090" if a.startswith("--web.listen") else a
                              for a in service["command"]]

    assert "mlflow: probes mlflow:5001" in " ".join(probe_problems(_with(config, "mlflow", moved_probe)))
    assert "mlflow: probes mlflow:5000, but mlflow listens on [5001]" in probe_problems(
        _with(config, "mlflow", moved_server))
    assert any(p.startswith("prometheus: probes ['/-/healthy']") for p in probe_problems(
        _with(config, "prometheus", wrong_path)))
    # A service whose probe passes on loopback but which the others cannot reach:
    changed = _with(config, "prometheus", bound_to_loopback)
    assert listening(changed, "prometheus") == {9090: True}
    assert "grafana: probes prometheus:9090" not in " ".join(probe_problems(changed))  # grafana probes itself
    assert binding_problems(changed)


def test_celery_healthchecks_ping_their_own_node_through_the_broker(config):
    for name in ("worker", "sql-worker", "spark-worker"):
        command = config["services"][name]["command"]
        node = (_value(command, "--hostname") or "celery@%h").split("@")[0]
        assert f"inspect ping -d {node}@$$HOSTNAME" in " ".join(config["services"][name]["healthcheck"]["test"])
    assert "CELERY_BROKER_URL" in " ".join(config["services"]["beat"]["healthcheck"]["test"])


# --- what is published on the host ----------------------------------------------------------------


def binding_problems(config: dict, raw: dict | None = None) -> list[str]:
    """Every published port that differs from the README, or listens where it should not."""
    raw = raw or yaml.safe_load(COMPOSE_FILE.read_text())
    problems = []
    for name, (ports, binding) in readme_ports().items():
        written = compose_bindings(raw, name) if name in raw["services"] else []
        documented = [(binding, port) for port, loopback in ports.items() if not loopback] if binding else []
        if written != documented:
            problems.append(f"{name}: published as {written}, documented as {documented}")
        for _, target in written:
            if listening(config, name).get(target, True):
                problems.append(f"{name}: publishes {target}, where it does not listen beyond its loopback")
    public = {name for name in config["services"]
              if any(ip == "0.0.0.0" for ip, _, _ in rendered_bindings(config, name))}  # noqa: S104
    if public != PUBLIC:
        problems.append(f"listening on every interface: {sorted(public)}, not {sorted(PUBLIC)}")
    return problems


def test_published_ports_bind_as_the_readme_says(config):
    assert binding_problems(config) == []
    documented_public = {name for name, (_, binding) in readme_ports().items()
                         if binding and binding.startswith("0.0.0.0:")}
    assert documented_public == PUBLIC


def test_a_published_port_that_drifts_from_the_readme_is_caught(config):
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    raw["services"]["prometheus"]["ports"] = ["${PROMETHEUS_PORT:-9090}:9090"]  # every interface
    problems = binding_problems(config, raw)
    assert any(p.startswith("prometheus: published as [('0.0.0.0:${PROMETHEUS_PORT:-9090}', 9090)]") for p in problems)
    opened = copy.deepcopy(config)
    opened["services"]["mlflow"]["ports"] = [{"published": 5000, "target": 5000}]
    assert "listening on every interface: ['mlflow', 'web'], not ['web']" in \
        binding_problems(opened)


def test_rendered_ports_are_the_defaults_of_env_example(config):
    values = _env_values(ENV_EXAMPLE)
    for name in readme_ports():
        assert rendered_bindings(config, name) == _documented_binding(name, values), name
        # .env.example spells out each default, so that a copy of it changes nothing.
        assert _documented_binding(name, values) == _documented_binding(name, {}), name
    assert set(PORT_VARIABLES) <= set(values)


def test_ports_follow_env_and_fall_back_to_the_defaults(tmp_path):
    lines = ENV_EXAMPLE.read_text().splitlines()
    bare = tmp_path / "bare.env"  # an older .env: none of the port variables
    bare.write_text("\n".join(line for line in lines if line.split("=", 1)[0] not in PORT_VARIABLES) + "\n")
    moved = {"CONTROLROOM_HTTP_PORT": "18000", "PROMETHEUS_BIND_ADDRESS": "10.1.2.3", "PROMETHEUS_PORT": "19090",
             "MLFLOW_BIND_ADDRESS": "10.1.2.4", "MLFLOW_PORT": "15000", "GRAFANA_BIND_ADDRESS": "10.1.2.5",
             "GRAFANA_PORT": "13000"}
    custom = tmp_path / "custom.env"
    custom.write_text(bare.read_text() + "".join(f"{k}={v}\n" for k, v in moved.items()))
    defaults, changed = render(bare), render(custom)
    for name in readme_ports():
        assert rendered_bindings(defaults, name) == _documented_binding(name, {}), name
        assert rendered_bindings(changed, name) == _documented_binding(name, moved), name
    assert rendered_bindings(changed, "prometheus") == [("10.1.2.3", 19090, 9090)]
