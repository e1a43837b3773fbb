"""The compose stack and collector pipelines (docker-compose.yml, collector-config.yaml, deploy/prometheus.yml).

No Docker engine runs where these tests run, so they validate the files: structure, names against the pinned collector
release (tests/collector_components.py), the attribute names our code emits, pinned images and host bindings.
Each checker returns a list of problems; the self-tests at the bottom feed it broken configs to prove it can fail.
"""

from __future__ import annotations

import copy
import importlib.metadata
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from mltrack_otel import semconv

from .collector_components import (
    COLLECTOR_IMAGE,
    COLLECTOR_VERSION,
    COMPONENT_TYPES,
    CONNECTOR_SIGNALS,
)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
COLLECTOR_CONFIG = ROOT / "collector-config.yaml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"

KINDS = ("receivers", "processors", "exporters", "connectors")
SIGNALS = {"traces", "metrics", "logs"}

# What the span-to-metrics connector may read: the values it sums and the dimensions it groups by.
SUMMED_ATTRIBUTES = {semconv.LLM_COST_TOTAL, gen_ai.GEN_AI_USAGE_INPUT_TOKENS, gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS}
DIMENSIONS = {gen_ai.GEN_AI_PROVIDER_NAME, gen_ai.GEN_AI_REQUEST_MODEL, gen_ai.GEN_AI_RESPONSE_MODEL}
REQUIRED_DIMENSIONS = {gen_ai.GEN_AI_PROVIDER_NAME, gen_ai.GEN_AI_REQUEST_MODEL}
COUNTED_CONDITION = f'attributes["{semconv.MLTRACK_USAGE_COUNTED}"] == true'

EXACT_TAG = re.compile(r"^v?\d+\.\d+\.\d+$")
LOOPBACK = "127.0.0.1"
BIND_VARIABLE = re.compile(r"^\$\{(?P<name>[A-Z_][A-Z0-9_]*):?-(?P<default>[^}]*)\}$")
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")
OTLP_PORTS = {4317, 4318}


def load(path: Path):
    with path.open() as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def collector() -> dict:
    return load(COLLECTOR_CONFIG)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


# --- collector checks ------------------------------------------------------------------------------------------------


def component_type(name: str) -> str:
    return name.split("/", 1)[0]


def pipeline_signal(pipeline_id: str) -> str:
    return pipeline_id.split("/", 1)[0]


def check_references(cfg: dict) -> list[str]:
    """Every component a pipeline names is defined in its section, and every defined one is used."""
    problems = []
    pipelines = cfg["service"]["pipelines"]
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    connectors = set(cfg.get("connectors") or {})
    for pid, pipeline in pipelines.items():
        if pipeline_signal(pid) not in SIGNALS:
            problems.append(f"pipeline {pid}: unknown signal")
        for role in ("receivers", "processors", "exporters"):
            for name in pipeline.get(role) or []:
                kind = "connectors" if role != "processors" and name in connectors else role
                used[kind].add(name)
                if name not in (cfg.get(kind) or {}):
                    problems.append(f"pipeline {pid}: {role[:-1]} {name!r} is not defined under {kind}:")
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            problems.append(f"pipeline {pid}: needs receivers and exporters")
    for kind in KINDS:
        for name in cfg.get(kind) or {}:
            if name not in used[kind]:
                problems.append(f"{kind}: {name!r} is defined but no pipeline uses it")
    for ext in (cfg.get("service") or {}).get("extensions") or []:
        if ext not in (cfg.get("extensions") or {}):
            problems.append(f"service.extensions: {ext!r} is not defined")
    return problems


def check_component_types(cfg: dict) -> list[str]:
    """Each component's type exists in the pinned release, for its kind."""
    problems = []
    for kind in (*KINDS, "extensions"):
        for name in cfg.get(kind) or {}:
            if component_type(name) not in COMPONENT_TYPES[kind]:
                problems.append(f"{kind}: type {component_type(name)!r} is not in otelcol-contrib {COLLECTOR_VERSION}")
    return problems


def check_connectors(cfg: dict) -> list[str]:
    """A connector is an exporter in one pipeline and a receiver in another, of signals it supports."""
    problems = []
    pipelines = cfg["service"]["pipelines"]
    for name in cfg.get("connectors") or {}:
        table = CONNECTOR_SIGNALS.get(component_type(name))
        if table is None:
            problems.append(f"connector {name!r}: add its supported pipeline types to CONNECTOR_SIGNALS")
            continue
        into = {pipeline_signal(p) for p, pl in pipelines.items() if name in (pl.get("exporters") or [])}
        out_of = {pipeline_signal(p) for p, pl in pipelines.items() if name in (pl.get("receivers") or [])}
        if not into or not out_of:
            problems.append(f"connector {name!r}: must be an exporter in one pipeline and a receiver in another")
        for signal in into:
            if signal not in table:
                problems.append(f"connector {name!r}: does not accept {signal}")
            elif not out_of & table[signal]:
                problems.append(
                    f"connector {name!r}: {signal} in, but no receiving pipeline of {sorted(table[signal])}"
                )
        produced = set().union(*(table.get(s, set()) for s in into)) if into else set()
        for signal in out_of - produced:
            problems.append(f"connector {name!r}: a {signal} pipeline receives from it, but it emits only {produced}")
    return problems


def check_processor_order(cfg: dict) -> list[str]:
    problems = []
    for pid, pipeline in cfg["service"]["pipelines"].items():
        procs = [component_type(p) for p in pipeline.get("processors") or []]
        if not procs or procs[0] != "memory_limiter":
            problems.append(f"pipeline {pid}: memory_limiter must be the first processor (got {procs})")
        if not procs or procs[-1] != "batch":
            problems.append(f"pipeline {pid}: batch must be the last processor (got {procs})")
    return problems


def attributes_read(expression: str) -> set[str]:
    return set(re.findall(r'attributes\["([^"]+)"\]', expression))


def check_span_metrics(cfg: dict) -> list[str]:
    """The span -> metrics connector sums only counted spans, reading attribute names our code emits."""
    problems = []
    connectors = cfg.get("connectors") or {}
    stm = [n for n in connectors if component_type(n) == "signaltometrics"]
    if not stm:
        return ["no signaltometrics connector turns span attributes into metrics"]
    summed = set()
    for name in stm:
        for metric in (connectors[name] or {}).get("spans") or []:
            label = f"{name} metric {metric.get('name')!r}"
            value = ((metric.get("sum") or {}).get("value")) or ""
            read = attributes_read(value)
            if len(read) != 1 or not read <= SUMMED_ATTRIBUTES:
                problems.append(f"{label}: sum.value must read one of {sorted(SUMMED_ATTRIBUTES)} (reads {read})")
                continue
            source = read.pop()
            summed.add(source)
            if metric.get("name") != source:
                problems.append(f"{label}: name the metric after the attribute it sums ({source})")
            conditions = metric.get("conditions") or []
            if not conditions:
                problems.append(f"{label}: no conditions, wrapper spans would be counted twice")
            for cond in conditions:  # conditions are ORed: each one must require a counted span
                if COUNTED_CONDITION not in cond or re.search(r"\bor\b", cond, re.IGNORECASE):
                    problems.append(f"{label}: condition {cond!r} must be `{COUNTED_CONDITION} and ...` (no `or`)")
                unknown = attributes_read(cond) - {semconv.MLTRACK_USAGE_COUNTED, source}
                if unknown:
                    problems.append(f"{label}: condition reads unexpected attributes {sorted(unknown)}")
            keys = {a.get("key") for a in metric.get("attributes") or []}
            if not keys <= DIMENSIONS or not keys >= REQUIRED_DIMENSIONS:
                problems.append(f"{label}: dimensions {sorted(keys)} must include {sorted(REQUIRED_DIMENSIONS)}")
    if summed != SUMMED_ATTRIBUTES:
        problems.append(f"summed attributes {sorted(summed)} != {sorted(SUMMED_ATTRIBUTES)}")
    # The contrib `sum` connector adds each value once per dimension attribute (connector/sumconnector/sum.go).
    for name in connectors:
        if component_type(name) == "sum":
            for metric_name, info in ((connectors[name] or {}).get("spans") or {}).items():
                if len((info or {}).get("attributes") or []) > 1:
                    problems.append(f"sum connector metric {metric_name!r}: more than one attribute multiplies sums")
    return problems


# Processors that pass span attributes through unchanged: the only ones allowed before MLflow, so that the attributes
# apps send for it (otlp_for_mlflow: mlflow.llm.cost, hidden wrapper usage) arrive as our exporter wrote them.
ATTRIBUTE_PRESERVING = {"memory_limiter", "batch"}
FOR_MLFLOW_ENV = "MLTRACK_OTLP_FOR_MLFLOW"


def check_mlflow_path(cfg: dict) -> list[str]:
    """Every traces pipeline exporting to MLflow forwards span attributes untouched."""
    problems = []
    mlflow_exporters = {n for n in cfg.get("exporters") or {} if n.startswith("otlphttp/mlflow")}
    if not mlflow_exporters:
        return ["no otlphttp/mlflow exporter"]
    for pid, pipeline in cfg["service"]["pipelines"].items():
        if not mlflow_exporters & set(pipeline.get("exporters") or []):
            continue
        for name in pipeline.get("processors") or []:
            if component_type(name) not in ATTRIBUTE_PRESERVING:
                problems.append(f"pipeline {pid}: processor {name!r} may rewrite the span attributes MLflow reads")
    return problems


def test_files_parse(collector, compose):
    assert set(collector) >= {"receivers", "processors", "exporters", "connectors", "service"}
    assert set(compose["services"]) == {"collector", "mlflow", "jaeger", "prometheus"}
    assert load(PROMETHEUS_CONFIG)["scrape_configs"]


def test_pipelines_reference_defined_components(collector):
    assert check_references(collector) == []


def test_component_types_exist_in_pinned_collector(collector):
    assert check_component_types(collector) == []


def test_connectors_join_compatible_pipelines(collector):
    assert check_connectors(collector) == []


def test_memory_limiter_first_batch_last(collector):
    assert check_processor_order(collector) == []


def test_span_metrics_count_only_counted_spans_with_our_names(collector):
    assert check_span_metrics(collector) == []


def test_expected_pipeline_shape(collector):
    pipelines = collector["service"]["pipelines"]
    traces, metrics = pipelines["traces"], pipelines["metrics"]
    assert traces["receivers"] == ["otlp"]
    assert set(traces["exporters"]) == {"otlphttp/mlflow", "otlp/jaeger", "signaltometrics"}
    assert set(metrics["receivers"]) == {"otlp", "signaltometrics"}  # app metrics and span-derived sums
    assert metrics["exporters"] == ["prometheus"]
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    mlflow = collector["exporters"]["otlphttp/mlflow"]
    assert re.fullmatch(r"\d+", str(mlflow["headers"]["x-mlflow-experiment-id"]))
    assert collector["exporters"]["otlp/jaeger"]["tls"]["insecure"] is True
    assert collector["exporters"]["prometheus"]["endpoint"] == "0.0.0.0:8889"


def test_mlflow_receives_our_attributes_unchanged(collector):
    assert check_mlflow_path(collector) == []


def test_the_documented_app_setting_exists(isolated_env, monkeypatch):
    """collector-config.yaml tells apps which variable makes MLflow show our prices; it must be a real setting."""
    from mltrack_otel import config

    assert FOR_MLFLOW_ENV in COLLECTOR_CONFIG.read_text()
    monkeypatch.setenv(FOR_MLFLOW_ENV, "true")
    assert config.load_settings().otlp_for_mlflow is True


# --- compose checks --------------------------------------------------------------------------------------------------


def split_port(spec) -> tuple[str | None, str | None, str]:
    """(host_ip, host_port, container_port) of a compose port, short or long syntax."""
    if isinstance(spec, dict):
        return spec.get("host_ip"), str(spec.get("published", "")) or None, str(spec["target"])
    text = str(spec)
    if text.startswith("${"):
        end = text.index("}") + 1
        host_ip, rest = text[:end], text[end + 1 :].split(":")
        return host_ip, rest[0], rest[1]
    parts = text.split(":")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return None, parts[0], parts[1]
    return None, None, parts[0]


def image_tag(image: str) -> tuple[str, str | None]:
    name, _, tag = image.rpartition(":")
    if "/" in tag or not name:  # "registry:5000/img" has no tag
        return image, None
    return name, tag


def command_args(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def allowed_hosts(service: dict) -> list[str]:
    args = command_args(service)
    for i, arg in enumerate(args):
        if arg.startswith("--allowed-hosts="):
            return arg.split("=", 1)[1].split(",")
        if arg == "--allowed-hosts" and i + 1 < len(args):
            return args[i + 1].split(",")
    return []


def check_compose(compose: dict, collector: dict) -> list[str]:
    problems = []
    services = compose["services"]
    for name, svc in services.items():
        repo, tag = image_tag(svc.get("image", ""))
        if tag is None or tag == "latest" or not EXACT_TAG.match(tag):
            problems.append(f"{name}: image {svc.get('image')!r} is not pinned to an exact version")
        if svc.get("network_mode") == "host":  # every port the service opens would be on every host interface
            problems.append(f"{name}: network_mode host bypasses the loopback-only port bindings")
        for spec in svc.get("ports") or []:
            host_ip, _, target = split_port(spec)
            var = BIND_VARIABLE.match(host_ip or "")
            if var:
                if var["name"] != "COLLECTOR_BIND" or var["default"] != LOOPBACK:
                    problems.append(f"{name}: port {spec!r} must use ${{COLLECTOR_BIND:-{LOOPBACK}}}")
                elif name != "collector" or int(target.split("/")[0]) not in OTLP_PORTS:
                    problems.append(f"{name}: only the collector's OTLP ports may follow COLLECTOR_BIND ({spec!r})")
            elif host_ip != LOOPBACK:
                problems.append(f"{name}: port {spec!r} must bind to {LOOPBACK} on the host")
    col = services.get("collector", {})
    repo, tag = image_tag(col.get("image", ""))
    if (repo, tag) != (COLLECTOR_IMAGE, COLLECTOR_VERSION):
        problems.append(f"collector image {col.get('image')!r} != {COLLECTOR_IMAGE}:{COLLECTOR_VERSION} (components)")
    config_args = [a.split("=", 1)[1] for a in command_args(col) if a.startswith("--config=")]
    mounts = {}
    for vol in col.get("volumes") or []:
        source, target = str(vol).split(":")[:2]
        mounts[target] = source
    if len(config_args) != 1 or mounts.get(config_args[0]) != "./collector-config.yaml":
        problems.append(f"collector: ./collector-config.yaml must be mounted at its --config path ({config_args})")
    hosts = allowed_hosts(services.get("mlflow", {}))
    if not hosts or any("*" in h for h in hosts):
        problems.append(f"mlflow: --allowed-hosts must list explicit hosts (got {hosts})")
    mlflow_exporters = [n for n in collector.get("exporters", {}) if n.startswith("otlphttp/mlflow")]
    for exp in mlflow_exporters:
        netloc = urlsplit(collector["exporters"][exp]["endpoint"]).netloc
        if netloc not in hosts:
            problems.append(f"mlflow: collector's Host header {netloc!r} is not in --allowed-hosts {hosts}")
        if netloc.split(":")[0] not in services:
            problems.append(f"{exp}: endpoint host {netloc!r} is not a compose service")
    return problems


def test_compose_is_pinned_bound_and_consistent(compose, collector):
    assert check_compose(compose, collector) == []


def test_mlflow_server_settings(compose):
    mlflow = compose["services"]["mlflow"]
    args = command_args(mlflow)
    assert sorted(allowed_hosts(mlflow)) == sorted(["mlflow", "mlflow:5000", "localhost:5000", "127.0.0.1:5000"])
    assert "--host=0.0.0.0" in args  # inside the container; the published port is loopback-only
    store = next(a.split("=", 1)[1] for a in args if a.startswith("--backend-store-uri="))
    assert store.startswith("sqlite:////")
    volume_targets = {str(v).split(":")[1]: str(v).split(":")[0] for v in mlflow["volumes"]}
    db_dir = str(Path(store.removeprefix("sqlite:///")).parent)
    assert volume_targets.get(db_dir) in compose["volumes"], "the sqlite file must live on a named volume"
    _, tag = image_tag(mlflow["image"])
    installed = importlib.metadata.version("mlflow").split(".")[:2]
    assert tag.lstrip("v").split(".")[:2] == installed, f"MLflow image {tag} vs installed mlflow {installed}"


def test_prometheus_scrapes_the_collector_exporter(compose, collector):
    targets = [
        t for job in load(PROMETHEUS_CONFIG)["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert f"collector:{port}" in targets
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in compose["services"]["prometheus"]["volumes"]}
    assert mounts.get("/etc/prometheus/prometheus.yml") == "./deploy/prometheus.yml"


def test_jaeger_exporter_targets_the_jaeger_service(compose, collector):
    host = collector["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert host in compose["services"]


# --- `docker compose config` -----------------------------------------------------------------------------------------


def compose_client_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def interpolate(value: str, env: dict[str, str]) -> str:
    def repl(match: re.Match) -> str:
        name, default = match["name"], match["default"]
        if env.get(name):
            return env[name]
        if default is None:
            raise KeyError(f"${{{name}}} has no default and is not set")
        return default

    return INTERPOLATION.sub(repl, value)


def check_compose_structure(compose: dict, env: dict[str, str]) -> list[str]:
    """What `docker compose config` would reject, for when the client cannot run it."""
    problems = []
    services = compose.get("services") or {}
    declared_volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        if not svc.get("image"):
            problems.append(f"{name}: no image")
        for dep in svc.get("depends_on") or []:
            if dep not in services:
                problems.append(f"{name}: depends_on unknown service {dep!r}")
        for vol in svc.get("volumes") or []:
            source = str(vol).split(":")[0]
            if source.startswith((".", "/")):
                if not (ROOT / source).exists():
                    problems.append(f"{name}: bind-mount source {source} does not exist")
            elif source not in declared_volumes:
                problems.append(f"{name}: named volume {source!r} is not declared under volumes:")
        for spec in svc.get("ports") or []:
            try:
                resolved = interpolate(str(spec), env)
            except KeyError as exc:
                problems.append(f"{name}: {exc}")
                continue
            if not re.fullmatch(r"(\d{1,3}(\.\d{1,3}){3}:)?\d+:\d+(/(tcp|udp))?", resolved):
                problems.append(f"{name}: port {resolved!r} is not HOST_IP:HOST_PORT:CONTAINER_PORT")
    return problems


def test_compose_config_validates():
    """`docker compose config -q` when the client can run it; the same structural checks always run."""
    env = {k: v for k, v in os.environ.items() if k != "COLLECTOR_BIND"}
    assert check_compose_structure(load(COMPOSE), env) == []
    if compose_client_works():
        done = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=ROOT,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def test_collector_bind_defaults_to_loopback_and_can_be_widened(compose):
    ports = compose["services"]["collector"]["ports"]
    assert {interpolate(p, {}) for p in ports} == {"127.0.0.1:4317:4317", "127.0.0.1:4318:4318"}
    assert {interpolate(p, {"COLLECTOR_BIND": "10.0.0.5"}) for p in ports} == {
        "10.0.0.5:4317:4317",
        "10.0.0.5:4318:4318",
    }


# --- the checkers can fail -------------------------------------------------------------------------------------------


def test_checkers_catch_broken_collector_configs(collector):
    cfg = copy.deepcopy(collector)
    cfg["service"]["pipelines"]["traces"]["exporters"].append("otlp/nowhere")
    cfg["processors"]["attributes/unused"] = {}
    assert any("otlp/nowhere" in p for p in check_references(cfg))
    assert any("attributes/unused" in p for p in check_references(cfg))

    cfg = copy.deepcopy(collector)
    cfg["exporters"]["jaeger"] = {}  # removed from contrib long ago
    assert any("'jaeger'" in p for p in check_component_types(cfg))

    cfg = copy.deepcopy(collector)
    procs = cfg["service"]["pipelines"]["metrics"]["processors"]
    procs.reverse()
    assert len(check_processor_order(cfg)) == 2

    cfg = copy.deepcopy(collector)
    cfg["service"]["pipelines"]["metrics"]["receivers"].remove("signaltometrics")
    assert check_connectors(cfg)

    cfg = copy.deepcopy(collector)
    metric = cfg["connectors"]["signaltometrics"]["spans"][0]
    metric["conditions"] = [f'{COUNTED_CONDITION} or attributes["x"] != nil']
    assert check_span_metrics(cfg)
    metric["conditions"] = []
    assert check_span_metrics(cfg)
    cfg = copy.deepcopy(collector)
    cfg["connectors"]["signaltometrics"]["spans"][0]["sum"]["value"] = 'Double(attributes["llm.cost"])'
    assert check_span_metrics(cfg)

    cfg = copy.deepcopy(collector)
    cfg["service"]["pipelines"]["traces"]["processors"].insert(1, "transform/rename")
    assert any("transform/rename" in p for p in check_mlflow_path(cfg))
    del cfg["exporters"]["otlphttp/mlflow"]
    assert check_mlflow_path(cfg) == ["no otlphttp/mlflow exporter"]


def test_checkers_catch_broken_compose_files(compose, collector):
    bad = copy.deepcopy(compose)
    bad["services"]["jaeger"]["image"] = "jaegertracing/jaeger:latest"
    bad["services"]["prometheus"]["image"] = "prom/prometheus"
    bad["services"]["mlflow"]["ports"] = ["5000:5000"]
    bad["services"]["prometheus"]["ports"] = ["0.0.0.0:9090:9090"]
    bad["services"]["jaeger"]["ports"] = ["${COLLECTOR_BIND:-127.0.0.1}:16686:16686"]
    bad["services"]["collector"]["network_mode"] = "host"
    problems = check_compose(bad, collector)
    needles = (
        "jaeger: image",
        "prometheus: image",
        "mlflow: port",
        "prometheus: port",
        "jaeger: only",
        "collector: network",
    )
    for needle in needles:
        assert any(p.startswith(needle) for p in problems), (needle, problems)

    bad = copy.deepcopy(compose)
    bad["services"]["mlflow"]["command"] = [a for a in command_args(bad["services"]["mlflow"]) if "allowed" not in a]
    bad["services"]["collector"]["image"] = f"{COLLECTOR_IMAGE}:0.135.0"
    bad["services"]["collector"]["volumes"] = []
    problems = check_compose(bad, collector)
    assert any("--allowed-hosts" in p for p in problems)
    assert any("collector image" in p for p in problems)
    assert any("must be mounted" in p for p in problems)

    bad = copy.deepcopy(compose)
    bad["services"]["prometheus"]["depends_on"] = ["grafana"]
    bad["services"]["mlflow"]["volumes"] = ["undeclared:/mlflow"]
    bad["services"]["collector"]["ports"] = ["${OTHER}:4317:4317"]
    assert len(check_compose_structure(bad, {})) == 3
