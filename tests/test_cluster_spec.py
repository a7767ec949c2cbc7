"""The cluster file: what it accepts, and what `llmos up` says of a bad one (before
any Ray is reached)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmos.devices import cluster_spec, ray_device
from llmos.devices.ray_device import node_ip_for
from llmos.errors import InvalidRequest, Unavailable
from llmos.kernel.boot import build, group_of
from llmos.params import DEFAULT_MODEL_NAME, Settings

LLMOS = Path(sys.executable).with_name("llmos")


def test_a_minimal_file_takes_the_defaults() -> None:
    spec = cluster_spec.parse({"devices": [{"name": "smol"}]})
    (d,) = spec.devices
    assert (d.engine, d.model_id, d.slots, d.replicas.min, d.max_replicas) == (
        "llamacpp",
        DEFAULT_MODEL_NAME,
        4,
        1,
        1,
    )
    assert d.resources.num_cpus == 1 and d.resources.custom == {}


def test_groups_become_replica_groups_with_their_policy() -> None:
    spec = cluster_spec.parse(
        {
            "devices": [
                {
                    "name": "m",
                    "engine": "mock",
                    "replicas": {"min": 2, "max": 5},
                    "autoscale": {"queue_per_slot": 2, "ttft_p95_s": 1.5, "idle_s": 30},
                }
            ]
        }
    )
    made: list[tuple[str, str]] = []

    def kind(s: Any, name: str) -> Any:
        made.append((s.name, name))
        return name

    g = group_of(spec.devices[0], kind)
    assert g.members == ["m-0", "m-1"] and made == [("m", "m-0"), ("m", "m-1")]
    p = g.policy
    assert (p.min, p.max, p.queue_per_slot, p.ttft_p95_s, p.idle_s) == (2, 5, 2, 1.5, 30)
    assert g.make("m-7") == "m-7"


@pytest.mark.parametrize(
    ("data", "param", "words"),
    [
        ({}, "cluster.devices", "Field required"),
        ({"devices": []}, "cluster.devices", "at least 1"),
        ({"devices": [{"name": "a", "slots": 0}]}, "cluster.devices[0].slots", "greater"),
        ({"devices": [{"name": "a b"}]}, "cluster.devices[0].name", "pattern"),
        ({"devices": [{"name": "a", "engine": "vllm"}]}, "cluster.devices[0].engine", "llamacpp"),
        ({"devices": [{"name": "a", "replicas": {"min": 3, "max": 2}}]}, "replicas", "below min"),
        ({"devices": [{"name": "a", "engine": "openai"}]}, "cluster.devices[0]", "url"),
        ({"devices": [{"name": "a", "capabilities": ["smell"]}]}, "devices[0]", "smell"),
        ({"devices": [{"name": "a", "gpus": 1}]}, "cluster.devices[0].gpus", "not permitted"),
        ({"devices": [{"name": "a"}, {"name": "a"}]}, "cluster", "unique"),
        ("devices", "cluster", "valid dictionary"),
    ],
)
def test_a_bad_file_names_the_field(data: Any, param: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        cluster_spec.parse(data)
    assert param in (e.value.param or "") and words in e.value.message


def test_a_cluster_needs_both_an_address_and_a_file(tmp_path: Path) -> None:
    spec = tmp_path / "c.yaml"
    spec.write_text("devices: [{name: a}]\n")
    for settings, param in (
        (Settings(home=tmp_path, ray_address="auto"), "cluster"),
        (Settings(home=tmp_path, cluster_file=spec), "ray_address"),
    ):
        with pytest.raises(InvalidRequest) as e:
            build(settings)
        assert e.value.param == param


def test_a_loopback_cluster_address_is_this_drivers_node_address() -> None:
    assert node_ip_for("127.0.0.2:6379") == "127.0.0.2"
    assert node_ip_for("ray://127.0.0.5:10001") == "127.0.0.5"
    assert node_ip_for("127.0.0.1:6379") is None  # Ray rewrites it anyway
    assert node_ip_for("auto") is None and node_ip_for("head.example:6379") is None


class FlakyInit:
    """ray.init that fails as Ray Client's proxy does when the server it starts for
    this client dies (a known Ray flake), `fails` times, then joins."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.calls: list[str] = []

    def __call__(self, address: str, **kwargs: Any) -> None:
        self.calls.append(address)
        if len(self.calls) <= self.fails:
            raise ConnectionAbortedError("Starting Ray client server failed")


@pytest.fixture
def flaky_ray(monkeypatch: pytest.MonkeyPatch) -> Any:
    import ray

    monkeypatch.setattr(ray_device, "CLIENT_RETRY_S", 0.0)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": False}])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})

    def install(fails: int) -> FlakyInit:
        init = FlakyInit(fails)
        monkeypatch.setattr(ray, "init", init)
        return init

    return install


def test_a_ray_client_join_is_tried_again_when_the_head_fails_to_start_its_server(
    flaky_ray: Any,
) -> None:
    init = flaky_ray(fails=2)
    joined = ray_device.connect("ray://127.0.0.2:10001")
    assert joined == {"nodes": 1, "resources": {"CPU": 2.0}}
    assert init.calls == ["ray://127.0.0.2:10001"] * 3


def test_a_ray_client_join_gives_up_clearly(flaky_ray: Any) -> None:
    init = flaky_ray(fails=99)
    with pytest.raises(Unavailable) as err:
        ray_device.connect("ray://127.0.0.2:10001")
    assert err.value.param == "ray_address" and "Starting Ray client server" in str(err.value)
    assert len(init.calls) == ray_device.CLIENT_ATTEMPTS


def test_a_driver_join_is_not_tried_again(flaky_ray: Any) -> None:
    init = flaky_ray(fails=1)
    with pytest.raises(Unavailable):
        ray_device.connect("127.0.0.2:6379")
    assert len(init.calls) == 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("devices:\n  - name: a\n    slots: many\n", "devices[0].slots"),
        ("devices: [\n", "is not YAML"),
    ],
)
def test_llmos_up_refuses_a_bad_cluster_file_clearly(tmp_path: Path, text: str, words: str) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    args = [str(LLMOS), "up", "--home", str(tmp_path), "--port", "0"]
    cmd = [*args, "--ray-address", "127.0.0.2:1", "--cluster", str(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert words in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_llmos_up_refuses_a_missing_cluster_file(tmp_path: Path) -> None:
    args = [str(LLMOS), "up", "--home", str(tmp_path), "--ray-address", "auto"]
    done = subprocess.run(
        [*args, "--cluster", str(tmp_path / "nope.yaml")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "cluster file not found" in done.stderr + done.stdout
