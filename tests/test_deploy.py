"""Deployment files: what the tools made for each of them cannot see.

Each file is checked by its own tool in ``make lint`` (hadolint: the Dockerfile; the Compose
Specification's schema: docker-compose.yml and deploy/compose.host-services.yml, each alone
and merged; GitLab's CI schema: .gitlab-ci.yml), and ``make image-check`` builds the image and
runs it (docs/deploy.md). What is checked here: the Kubernetes manifests against the schemas of
a pinned Kubernetes version, and how the files agree with each other and with the code
(settings, commands, the build context, who waits for whom, what only the demo exposes).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # stated in docs/deploy.md
DEMO_SERVICES = {"provider", "mailpit"}


def readme_settings() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.MULTILINE))


def management_commands() -> set[str]:
    from django.core.management import get_commands

    return set(get_commands())


def deploy_script(name: str) -> ModuleType:
    """A script of deploy/ (not a package) imported by its path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# --- Dockerfile and its build context -------------------------------------------------------


def copied_sources() -> set[str]:
    """The top-level paths of the build context the Dockerfile copies in."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    sources = set()
    for line in text.splitlines():
        words = shlex.split(line.strip()) if line.strip().upper().startswith("COPY ") else []
        if words and not words[1].startswith("--from="):
            sources |= {source.split("/")[0] for source in words[1:-1]}
    return sources


def test_dockerignore_keeps_the_context_small_but_not_what_the_image_needs():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", "devtools/oidc"} <= ignored
    copied = copied_sources()
    assert {"manage.py", "mailing", "deploy", "devtools"} <= copied
    assert copied.isdisjoint(ignored)


def test_the_image_check_replaces_only_the_base_it_knows():
    image_check = deploy_script("image_check")
    assert image_check.dockerfile_bases() == ["python:3.11-slim"]
    assert image_check.qualified("python:3.11-slim") == "docker.io/library/python:3.11-slim"
    assert image_check.qualified("quay.io/x/y:1") == "quay.io/x/y:1"
    assert image_check.timestamp("2026-12-01T21:40:30.123456789Z") < image_check.timestamp(
        "2026-12-01T21:40:30.2+00:00"
    )


# --- docker-compose.yml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_migrations_once_before_web_and_worker(compose):
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"][-2:] == ["migrate", "--noinput"] and migrate["restart"] == "no"
    assert migrate["healthcheck"] == {"disable": True}  # a one-off job
    assert migrate["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    for name in ("web", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }


def test_every_long_running_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        if name == "migrate":
            continue
        if name == "web":  # the image's own HEALTHCHECK, on /healthz
            assert "healthcheck" not in service
            assert re.search(
                r"^HEALTHCHECK .*deploy/healthcheck\.py",
                (ROOT / "Dockerfile").read_text(),
                re.M | re.S,
            )
            continue
        assert service["healthcheck"]["test"], f"{name} has no health check"


def test_compose_commands_are_management_commands(compose):
    commands = management_commands()
    for name in ("migrate", "worker"):
        command = compose["services"][name]["command"]
        assert command[:2] == ["python", "manage.py"] and command[2] in commands
    # The stand-in runs without Django and without the app's settings (its own tokens only).
    assert compose["services"]["provider"]["command"][:3] == ["python", "-m", "devtools.provider"]


def test_only_the_demo_profile_has_the_stand_ins_and_only_on_loopback(compose):
    services = compose["services"]
    for name, service in services.items():
        if name in DEMO_SERVICES:
            assert service["profiles"] == ["demo"]
            assert service["ports"] and all(p.startswith("127.0.0.1:") for p in service["ports"])
        else:
            assert "profiles" not in service, f"{name} must run without a profile"
            assert DEMO_SERVICES.isdisjoint(service.get("depends_on", {})), name


def test_compose_sets_every_setting(compose):
    services = compose["services"]
    for name in ("web", "worker", "migrate"):
        env = services[name]["environment"]
        assert readme_settings() - set(env) == set(), f"{name} lacks settings"
        assert env["DATABASE_URL"].endswith("@postgres:5432/mailing}")
        assert env["REDIS_URL"] == "${REDIS_URL:-redis://redis:6379/0}"
    # web and worker aggregate their metrics through one shared directory
    web_volumes = services["web"]["volumes"]
    assert web_volumes == services["worker"]["volumes"]
    assert web_volumes[0].endswith(":" + services["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"])


def test_the_host_services_override_starts_no_database_of_its_own():
    check_compose = deploy_script("check_compose")
    merged = check_compose.documents(
        [ROOT / "docker-compose.yml", ROOT / "deploy" / "compose.host-services.yml"]
    )
    services = next(doc for name, doc in merged.items() if "+" in name)["services"]
    assert not services["migrate"].get("depends_on")
    for name in ("migrate", "web", "worker", "provider"):
        assert services[name]["network_mode"] == "host"
        assert set(services[name].get("depends_on") or {}) <= {"migrate"}
        assert not services[name].get("ports")  # the host's network: nothing to publish


def test_the_compose_schema_check_can_fail(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  web:\n    network_mod: host\n")
    command = [sys.executable, str(ROOT / "deploy" / "check_compose.py"), "docker-compose.yml"]
    result = subprocess.run(
        [*command, str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1
    assert "'network_mod' was unexpected" in result.stdout


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
    assert {job["stage"] for job in jobs.values()} == {"lint", "test", "build", "deploy"}
    by_stage = {job["stage"]: (name, job) for name, job in jobs.items() if name != "image-check"}

    def script(job: dict) -> str:
        return "\n".join(job.get("before_script", []) + job.get("script", []))

    assert make_targets(script(by_stage["lint"][1])) == {"lint"}
    test_job = by_stage["test"][1]
    assert make_targets(script(test_job)) == {"test"}
    image_check = jobs["image-check"]
    assert image_check["stage"] == "test" and make_targets(script(image_check)) == {"image-check"}
    for job in (test_job, image_check):
        images = " ".join(
            service if isinstance(service, str) else service["name"] for service in job["services"]
        )
        assert "postgres" in images and "redis" in images
        assert job["variables"]["DATABASE_URL"].startswith("postgres://")
        assert job["variables"]["REDIS_URL"].startswith("redis://")
    # Same targets as the CI entry point, and they exist in the Makefile.
    ci_run = make_targets((ROOT / ".ci" / "run").read_text())
    assert ci_run and ci_run <= set().union(*(make_targets(script(job)) for job in jobs.values()))
    makefile = (ROOT / "Makefile").read_text()
    for target in make_targets("\n".join(script(job) for job in jobs.values())):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
    build = script(by_stage["build"][1])
    assert "kaniko" in build or "docker build" in build
    deploy = by_stage["deploy"][1]
    assert deploy["when"] == "manual" and "kubectl apply -k" in script(deploy)
