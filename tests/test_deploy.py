"""The deployment files under deploy/ checked offline: the Kubernetes manifests against the
Kubernetes JSON schemas (``kubernetes-validate``, which ships them), the compose file against
the Compose Specification's schema (tests/data/compose-spec, Apache-2.0, with its licence)
and, where Docker is installed, ``docker compose config``; then what the schemas cannot say:
no secret written in a manifest, probes on /health, grace periods that outlast clinvk's own
drain, the config each role loads is one clinvk accepts, and the same in every file that
carries it. Each check is also run on a broken copy, which it must reject."""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from clinvk_lib import config



# The dev venv's (kubernetes-validate brings PyYAML and jsonschema): the unit tier's venvs
# have none of them, and leave these tests out (slow).
pytestmark = pytest.mark.slow


def dev_module(name: str) -> Any:
    """A module of tests/requirements-dev.txt, or None when it is not installed."""
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


yaml = dev_module("yaml")
jsonschema = dev_module("jsonschema")
kv = dev_module("kubernetes_validate.utils")


@pytest.fixture(autouse=True)
def dev_modules() -> None:
    """Skip without the dev requirements, or fail under CI=true, where test.sh installs
    them."""
    missing = [name for name, module in (("PyYAML", yaml), ("jsonschema", jsonschema),
                                         ("kubernetes-validate", kv)) if module is None]
    if missing:
        message = "%s not installed (tests/requirements-dev.txt)" % ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": CI must have it", pytrace=False)
        pytest.skip(message)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
COMPOSE = os.path.join(DEPLOY, "compose.yaml")
COMPOSE_SCHEMA = os.path.join(ROOT, "tests", "data", "compose-spec", "compose-spec.json")
MANIFESTS = sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml")))
ROLE_CONFIGS = {"api": os.path.join(DEPLOY, "config", "api.yaml"),
                "worker": os.path.join(DEPLOY, "config", "worker.yaml")}
# Environment variables whose value is a secret: never written in a manifest.
SECRET_NAME = re.compile(r"KEY|PASSWORD|TOKEN|SECRET")


def documents(path: str) -> List[Dict[str, Any]]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def all_objects() -> List[Dict[str, Any]]:
    return [d for path in MANIFESTS for d in documents(path)]


def find(objects: List[Dict[str, Any]], kind: str, name: str) -> Dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, "deploy/k8s/ has %d %s named %s" % (len(found), kind, name)
    return found[0]


def k8s_errors(obj: Dict[str, Any]) -> str:
    """Why ``obj`` is not a valid Kubernetes object of the latest schemas ('' if it is)."""
    try:
        kv.validate(obj, kv.latest_version(), strict=True)
    except (kv.ValidationError, kv.SchemaNotFoundError, kv.InvalidSchemaError) as exc:
        return "%s %s: %s" % (obj.get("kind"), obj.get("metadata", {}).get("name"),
                              str(exc).splitlines()[0])
    return ""


def container(workload: Dict[str, Any]) -> Dict[str, Any]:
    pod = workload["spec"]["template"]["spec"]
    found = [c for c in pod["containers"] if c["name"] == "clinvk"]
    assert found, "%s has no container named clinvk" % workload["metadata"]["name"]
    return found[0]


def role_config(objects: List[Dict[str, Any]], name: str) -> Dict[str, Any]:
    return yaml.safe_load(find(objects, "ConfigMap", name)["data"]["config.yaml"])


# -- Kubernetes -----------------------------------------------------------------------------


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    objects = all_objects()
    assert {o["kind"] for o in objects} >= {"Deployment", "StatefulSet", "Service",
                                            "ConfigMap", "Namespace"}
    assert [k8s_errors(o) for o in objects if k8s_errors(o)] == []


@pytest.mark.parametrize("breakage", ["misspelled field", "wrong type", "missing field"])
def test_the_schema_check_rejects_a_broken_manifest(breakage):
    deployment = copy.deepcopy(find(all_objects(), "Deployment", "clinvk-api"))
    if breakage == "misspelled field":
        container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")
    elif breakage == "wrong type":
        deployment["spec"]["replicas"] = "two"
    else:
        del container(deployment)["image"], container(deployment)["name"]
        deployment["spec"]["template"]["spec"]["containers"][0].pop("args")
    assert k8s_errors(deployment)


def test_the_validator_works_without_a_network():
    """The schemas come with the package: nothing is fetched (run with no network at all
    where the kernel lets us make an empty network namespace)."""
    unshare = shutil.which("unshare")
    code = ("import sys, yaml; from kubernetes_validate import utils as kv\n"
            "for d in yaml.safe_load_all(open(sys.argv[1])):\n"
            "    kv.validate(d, kv.latest_version(), strict=True)\n")
    argv = [sys.executable, "-c", code, os.path.join(DEPLOY, "k8s", "api.yaml")]
    if unshare and subprocess.run([unshare, "-n", "true"], stderr=subprocess.DEVNULL
                                  ).returncode == 0:
        argv = [unshare, "-n"] + argv
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert done.returncode == 0, done.stdout.decode()


def secret_env_written_in(objects: List[Dict[str, Any]]) -> List[str]:
    """``kind/name: VAR`` of every secret-looking variable given a value in a manifest, and
    of any Secret object (they are made with kubectl, never committed)."""
    found = ["%s/%s" % (o["kind"], o["metadata"]["name"]) for o in objects
             if o["kind"] == "Secret"]
    for o in objects:
        pod = o.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []):
            for var in c.get("env", []):
                value = var.get("value", "")
                if SECRET_NAME.search(var["name"]) and "valueFrom" not in var:
                    found.append("%s/%s: %s" % (o["kind"], o["metadata"]["name"], var["name"]))
                elif "@" in value and not re.search(r"//:\$\([A-Z_]+\)@", value):
                    found.append("%s/%s: %s" % (o["kind"], o["metadata"]["name"], var["name"]))
    return found


def test_no_secret_is_written_in_a_manifest_they_come_from_secrets():
    objects = all_objects()
    assert secret_env_written_in(objects) == []
    refs = {(var["name"], var["valueFrom"]["secretKeyRef"]["name"])
            for o in objects for c in o.get("spec", {}).get("template", {}).get("spec", {})
            .get("containers", []) for var in c.get("env", []) if "valueFrom" in var}
    assert {("ANTHROPIC_API_KEY", "clinvk-secrets"), ("OPENAI_API_KEY", "clinvk-secrets"),
            ("CLINVK_API_KEYS", "clinvk-secrets"), ("REDIS_PASSWORD", "clinvk-secrets")} <= refs
    broken = copy.deepcopy(objects)
    worker = find(broken, "StatefulSet", "clinvk-worker")
    container(worker)["env"].append({"name": "ANTHROPIC_API_KEY", "value": "sk-ant-123"})
    store = [v for v in container(worker)["env"] if v["name"] == "CLINVK_SERVER_STORE"][0]
    store["value"] = "redis://:hunter2@redis:6379/0"
    assert len(secret_env_written_in(broken)) == 2


def grace_problems(objects: List[Dict[str, Any]]) -> List[str]:
    """What keeps the API nodes and workers from draining: probes not on /health, no
    preStop on the API nodes, grace periods shorter than clinvk's shutdown_grace_secs."""
    problems = []
    api = find(objects, "Deployment", "clinvk-api")
    api_c = container(api)
    for probe in ("readinessProbe", "livenessProbe"):
        if api_c.get(probe, {}).get("httpGet", {}).get("path") != "/health":
            problems.append("api %s is not on /health" % probe)
    pre_stop = api_c.get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    pause = int(command[1]) if command[:1] == ["sleep"] else \
        pre_stop.get("sleep", {}).get("seconds", 0)
    if not pause:
        problems.append("api has no preStop pause")
    for workload, name, extra in ((api, "clinvk-api", pause),
                                  (find(objects, "StatefulSet", "clinvk-worker"),
                                   "clinvk-worker", 0)):
        grace = role_config(objects, name)["server"]["shutdown_grace_secs"]
        period = workload["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if period <= grace + extra:
            problems.append("%s: terminationGracePeriodSeconds %d <= %d s of preStop and "
                            "shutdown_grace_secs" % (name, period, grace + extra))
    return problems


def test_probes_and_grace_periods_let_runs_drain():
    objects = all_objects()
    assert grace_problems(objects) == []
    broken = copy.deepcopy(objects)
    find(broken, "StatefulSet", "clinvk-worker")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"] = 30
    container(find(broken, "Deployment", "clinvk-api"))["livenessProbe"]["httpGet"][
        "path"] = "/"
    assert len(grace_problems(broken)) == 2


def test_workers_keep_the_clis_homes_on_a_volume_of_their_own():
    worker = find(all_objects(), "StatefulSet", "clinvk-worker")
    claims = {t["metadata"]["name"] for t in worker["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container(worker)["volumeMounts"]}
    assert mounts.get("home") == "/home/clinvk" and "home" in claims
    assert container(worker)["args"][0] == "worker"
    cfg = role_config(all_objects(), "clinvk-worker")["server"]
    assert cfg["default_workdir"].startswith(mounts["home"] + "/")


def test_each_configmap_is_the_roles_config_file_and_clinvk_accepts_it(tmp_path):
    objects = all_objects()
    for name, role in (("clinvk-api", "api"), ("clinvk-worker", "worker")):
        with open(ROLE_CONFIGS[role]) as f:
            assert find(objects, "ConfigMap", name)["data"]["config.yaml"] == f.read(), \
                "deploy/k8s's ConfigMap %s differs from deploy/config/%s.yaml" % (name, role)
        cfg = config.load(ROLE_CONFIGS[role], env={
            "CLINVK_SERVER_STORE": "redis://:pw@redis:6379/0", "CLINVK_HOME": str(tmp_path)})
        assert cfg.get("server.store") == "redis://:pw@redis:6379/0"
    assert config.load(ROLE_CONFIGS["api"], env={}).get("server.role") == "api"
    broken = tmp_path / "broken.yaml"
    broken.write_text(open(ROLE_CONFIGS["worker"]).read().replace("job_retries: 0",
                                                                  "job_retrys: 0"))
    with pytest.raises(config.ConfigError, match="job_retrys"):
        config.load(str(broken), env={})


# -- Docker Compose -------------------------------------------------------------------------


def compose_errors(doc: Dict[str, Any]) -> List[str]:
    with open(COMPOSE_SCHEMA) as f:
        schema = json.load(f)
    validator = jsonschema.Draft7Validator(schema)
    return sorted("%s: %s" % ("/".join(map(str, e.absolute_path)), e.message)
                  for e in validator.iter_errors(doc))


def compose() -> Dict[str, Any]:
    with open(COMPOSE) as f:
        return yaml.safe_load(f)


def test_the_compose_file_is_valid_against_the_compose_specification():
    doc = compose()
    assert compose_errors(doc) == []
    assert set(doc["services"]) == {"redis", "api-1", "api-2", "worker-1", "worker-2", "nginx"}


@pytest.mark.parametrize("breakage", ["unknown key", "wrong type"])
def test_the_compose_check_rejects_a_broken_file(breakage):
    doc = compose()
    if breakage == "unknown key":
        doc["services"]["api-1"]["comand"] = doc["services"]["api-1"].pop("command")
    else:
        doc["services"]["redis"]["ports"] = 6379
    assert compose_errors(doc)


def docker_compose() -> List[str]:
    """The command of Docker Compose here (the docker plugin, else docker-compose), or []."""
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else []


def test_docker_compose_config_accepts_the_file():
    command = docker_compose()
    if not command:
        pytest.skip("Docker Compose is not installed: the schema check above stands in for "
                    "`docker compose config`")
    env_file = os.path.join(DEPLOY, "clinvk.env")
    made = not os.path.exists(env_file)
    if made:
        shutil.copy(os.path.join(DEPLOY, "clinvk.env.example"), env_file)
    try:
        done = subprocess.run(command + ["-f", COMPOSE, "config", "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    finally:
        if made:
            os.unlink(env_file)
    assert done.returncode == 0, done.stdout.decode()


def test_compose_roles_mount_their_config_and_outlast_clinvks_drain():
    services = compose()["services"]
    for name in ("api-1", "api-2", "worker-1", "worker-2"):
        role = name.split("-")[0]
        service = services[name]
        assert "./config/%s.yaml:/etc/clinvk/config.yaml:ro" % role in service["volumes"]
        assert service["command"][0] == ("serve" if role == "api" else "worker")
        assert service["environment"]["CLINVK_SERVER_STORE"].startswith("redis://redis:")
        grace = config.load(ROLE_CONFIGS[role], env={}).get("server.shutdown_grace_secs")
        assert seconds(service["stop_grace_period"]) > grace, name
    homes = [v for n in ("worker-1", "worker-2") for v in services[n]["volumes"]
             if v.endswith(":/home/clinvk")]
    assert len(set(homes)) == 2, "each worker needs a home volume of its own"
    assert services["nginx"]["ports"] == ["127.0.0.1:8080:8080"]
    assert all("ports" not in services[n] for n in services if n != "nginx")


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, "write stop_grace_period in seconds: %r" % duration
    return int(match.group(1))


def test_compose_nginx_sends_to_both_api_nodes_and_nginx_accepts_it(tmp_path):
    """deploy/compose-nginx.conf with the API nodes' names made local addresses, checked by
    Debian's nginx (nginx -t) where it is installed."""
    with open(os.path.join(DEPLOY, "compose-nginx.conf")) as f:
        text = f.read()
    assert re.findall(r"server (api-\d):8080", text) == ["api-1", "api-2"]
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        pytest.skip("nginx is not installed (Debian package nginx)")
    from tests.test_nginx import main_config
    site = tmp_path / "site.conf"
    site.write_text(text.replace("api-1:8080", "127.0.0.1:1").replace("api-2:8080", "127.0.0.1:2")
                    .replace("listen 8080;", "listen 127.0.0.1:1;"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(main_config(str(tmp_path), str(site)))
    done = subprocess.run([nginx, "-p", str(tmp_path), "-c", str(conf), "-e",
                           str(tmp_path / "error.log"), "-t"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert done.returncode == 0, done.stdout.decode()


def test_the_dockerfile_builds_on_python_and_node_with_clinvk_pyz():
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        text = f.read()
    assert re.search(r"^FROM python:3\.12-slim", text, re.M)
    assert re.search(r"^COPY .*dist/clinvk\.pyz /opt/clinvk/clinvk\.pyz", text, re.M)
    assert "@anthropic-ai/claude-code@" in text and "/usr/local/bin/node" in text
    assert re.search(r"^USER clinvk", text, re.M), "the CLIs must not run as root"
    for workload in (find(all_objects(), "Deployment", "clinvk-api"),
                     find(all_objects(), "StatefulSet", "clinvk-worker")):
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
