"""Deployment files: Dockerfile, docker-compose.yml, Kubernetes manifests, GitLab CI.

No Docker engine or cluster here: what can be checked offline is checked (structure,
references to files and commands that must exist, Kubernetes schemas of a pinned version).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # stated in docs/deploy.md


def readme_settings() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.MULTILINE))


def management_commands() -> set[str]:
    from django.core.management import get_commands

    return set(get_commands())


# --- Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, rest))
    return found


def test_dockerfile_is_multi_stage_on_python_311_slim():
    froms = [rest for keyword, rest in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) >= 2
    assert all(rest.startswith("python:3.11-slim") for rest in froms)
    final = stages()[-1]
    assert any(k == "COPY" and rest.startswith("--from=builder") for k, rest in final)


def test_dockerfile_runs_as_a_non_root_user_and_collects_static_files():
    final = stages()[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "collectstatic --noinput" in runs
    assert any(k == "HEALTHCHECK" and "/healthz" in rest for k, rest in final)


def test_dockerfile_copy_sources_exist():
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY" or rest.startswith("--from="):
            continue
        *sources, _destination = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"


def test_the_image_command_exists():
    final = stages()[-1]
    cmd = yaml.safe_load([rest for keyword, rest in final if keyword == "CMD"][-1])
    assert cmd[0] == "gunicorn"
    assert "gunicorn" in (ROOT / "requirements.txt").read_text()
    config = cmd[cmd.index("--config") + 1]
    assert (ROOT / config).is_file()
    module, _, attribute = cmd[-1].partition(":")
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file() and attribute == "application"


def test_dockerignore_keeps_the_context_small_but_not_what_the_image_needs():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    copied = {
        source.split("/")[0]
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY" and not rest.startswith("--from=")
        for source in shlex.split(rest)[:-1]
    }
    assert copied.isdisjoint(ignored)


# --- docker-compose.yml ----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_every_service_with_a_health_check(compose):
    services = compose["services"]
    assert set(services) == {
        "web", "worker", "migrate", "postgres", "redis", "provider", "mailpit"
    }  # fmt: skip
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name == "migrate":  # a one-off job
            assert check.get("disable") is True and service["restart"] == "no"
            continue
        assert check.get("test"), f"{name} has no health check"
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])


def test_compose_runs_migrations_once_before_web_and_worker(compose):
    services = compose["services"]
    assert services["migrate"]["command"][-2:] == ["migrate", "--noinput"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"


def test_compose_commands_and_ports(compose):
    services = compose["services"]
    commands = management_commands()
    for name in ("migrate", "worker"):
        command = services[name]["command"]
        assert command[:2] == ["python", "manage.py"] and command[2] in commands
    assert services["provider"]["command"] == [
        "python", "-m", "devtools.provider", "--host", "0.0.0.0", "--port", "8081"
    ]  # fmt: skip
    assert "8000:8000" in services["web"]["ports"]
    assert "8081:8081" in services["provider"]["ports"]
    assert "8025:8025" in services["mailpit"]["ports"]
    assert services["mailpit"]["image"].startswith("axllent/mailpit")


def test_compose_sets_every_setting(compose):
    services = compose["services"]
    for name in ("web", "worker", "migrate"):
        env = services[name]["environment"]
        assert readme_settings() - set(env) == set(), f"{name} lacks settings"
        assert env["DATABASE_URL"].endswith("@postgres:5432/mailing}")
        assert env["REDIS_URL"] == "${REDIS_URL:-redis://redis:6379/0}"
        assert env["PROBE_URL"] == "${PROBE_URL:-http://provider:8081/v1}"
        assert env["EMAIL_HOST"] == "${EMAIL_HOST:-mailpit}"
    # web and worker aggregate their metrics through one shared directory
    web_volumes = services["web"]["volumes"]
    assert web_volumes == services["worker"]["volumes"]
    assert web_volumes[0].endswith(":" + services["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"])


def compose_cli_works() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not compose_cli_works(), reason="the docker compose plugin is not installed")
def test_docker_compose_config_accepts_the_file():
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- Kubernetes --------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_kustomization_lists_every_manifest_except_the_secret_template():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    files = {p.name for p in manifest_files()} - {"kustomization.yaml"}
    templates = {name for name in files if name.endswith(".example.yaml")}
    assert templates == {"secret.example.yaml"}
    assert listed == files - templates
    assert all((K8S / name).is_file() for name in listed)


@pytest.mark.parametrize(
    "path",
    # kustomization.yaml is kustomize's own file, not a Kubernetes object.
    [p for p in manifest_files() if p.name != "kustomization.yaml"],
    ids=lambda p: p.name,
)
def test_manifest_is_valid_for_the_pinned_kubernetes_version(path):
    import kubernetes_validate

    for document in documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def all_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in manifest_files():
        for doc in documents(path):
            if "kind" in doc and doc["kind"] != "Kustomization":
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def test_the_manifests_have_what_production_needs():
    objects = all_objects()
    kinds = {kind for kind, _ in objects}
    assert {
        "Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Ingress",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job",
    } <= kinds  # fmt: skip
    web = objects[("Deployment", "mailing-web")]["spec"]["template"]["spec"]
    worker = objects[("Deployment", "mailing-worker")]["spec"]["template"]["spec"]
    for spec in (web, worker):
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["resources"]["requests"] and container["resources"]["limits"]
        probed = [c for c in spec["containers"] if "livenessProbe" in c]
        assert probed, "no probes"
        for container in probed:
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"]["path"] == "/healthz"
    assert "command" not in web["containers"][0]  # the image CMD: gunicorn
    worker_commands = [c["command"] for c in worker["containers"]]
    assert ["python", "manage.py", "qcluster"] in worker_commands
    job = objects[("Job", "mailing-migrate")]["spec"]["template"]["spec"]
    assert job["containers"][0]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    commands = management_commands()
    for spec in (web, worker, job):
        for container in spec["containers"]:
            command = container.get("command", [])
            if command[:2] == ["python", "manage.py"]:
                assert command[2] in commands
    for name in ("mailing-web", "mailing-worker"):
        assert ("PodDisruptionBudget", name) in objects
    assert (
        objects[("HorizontalPodAutoscaler", "mailing-web")]["spec"]["scaleTargetRef"]["name"]
        == "mailing-web"
    )


def test_config_and_secret_template_cover_every_setting_without_real_secrets():
    objects = all_objects()
    config = objects[("ConfigMap", "mailing-config")]["data"]
    secret = objects[("Secret", "mailing-secrets")]["stringData"]
    assert readme_settings() - set(config) - set(secret) == set()
    assert set(config).isdisjoint(secret)
    assert config["DEBUG"] == "0" and config["SECURE_SSL_REDIRECT"] == "1"
    for key, value in secret.items():
        assert "CHANGE-ME" in value or "example" in value, f"{key} looks like a real secret"


# --- GitLab CI ----------------------------------------------------------------------------


def make_targets(text: str) -> set[str]:
    return set(re.findall(r"\bmake\s+([a-z][a-z0-9_-]*)", text))


def test_gitlab_ci_has_the_stages_and_the_same_make_targets_as_ci_run():
    ci = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    assert ci["stages"] == ["lint", "test", "build", "deploy"]
    jobs = {name: job for name, job in ci.items() if isinstance(job, dict) and "stage" in job}
    by_stage = {job["stage"]: (name, job) for name, job in jobs.items()}
    assert set(by_stage) == {"lint", "test", "build", "deploy"}

    def script(job: dict) -> str:
        return "\n".join(job.get("before_script", []) + job.get("script", []))

    assert make_targets(script(by_stage["lint"][1])) == {"lint"}
    test_job = by_stage["test"][1]
    assert make_targets(script(test_job)) == {"test"}
    images = " ".join(
        service if isinstance(service, str) else service["name"] for service in test_job["services"]
    )
    assert "postgres" in images and "redis" in images
    assert test_job["variables"]["DATABASE_URL"].startswith("postgres://")
    assert test_job["variables"]["REDIS_URL"].startswith("redis://")
    # Same targets as the CI entry point, and they exist in the Makefile.
    ci_run = make_targets((ROOT / ".ci" / "run").read_text())
    assert ci_run and ci_run <= make_targets(script(test_job)) | make_targets(
        script(by_stage["lint"][1])
    )
    makefile = (ROOT / "Makefile").read_text()
    for target in make_targets("\n".join(script(job) for job in jobs.values())):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
    build = script(by_stage["build"][1])
    assert "kaniko" in build or "docker build" in build
    deploy = by_stage["deploy"][1]
    assert deploy["when"] == "manual" and "kubectl apply -k" in script(deploy)
