"""Helpers of tests/test_deploy.py and tests/test_deploy_k8s.py: the kustomize
directories under deploy/k8s rendered as kustomize renders them (resources, namespace,
images, JSON 6902 patches; any other field is refused, so a new kind of kustomization
cannot pass unchecked), the pod templates of the rendered objects, the shape of a
cluster device file, and deploy/Dockerfile's stages as Docker parses them."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "images",
    "patches",
    "configurations",
}
# Where kustomize's `images:` transformer looks in built-in kinds (a subset of its
# defaults); a kustomization's `configurations:` add paths for custom resources.
IMAGE_PATHS = [
    {"path": "spec/template/spec/containers[]/image"},
    {"path": "spec/template/spec/initContainers[]/image"},
    {"path": "spec/containers[]/image"},
]

Obj = dict[str, Any]


def load_all(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization(folder: Path) -> Obj:
    k: Obj = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(k) - KUSTOMIZATION_FIELDS
    assert not unknown, f"{folder}: fields the test's renderer does not know: {unknown}"
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert k["kind"] == "Kustomization"
    return k


def render(folder: Path) -> list[Obj]:
    """The objects `kubectl apply -k folder` would send, in order."""
    k = kustomization(folder)
    objects: list[Obj] = []
    for entry in k.get("resources", []):
        path = (folder / entry).resolve()
        assert path.exists(), f"{folder}/kustomization.yaml: no resource {entry}"
        objects += render(path) if path.is_dir() else load_all(path)
    objects = copy.deepcopy(objects)
    for patch in k.get("patches", []):
        targets = [o for o in objects if _matches(o, patch["target"])]
        assert len(targets) == 1, f"patch target {patch['target']} matches {len(targets)}"
        for op in yaml.safe_load(patch["patch"]):
            apply_json_patch(targets[0], op)
    if "namespace" in k:
        for o in objects:
            if o["kind"] != "Namespace":
                o["metadata"]["namespace"] = k["namespace"]
    specs = list(IMAGE_PATHS)
    for name in k.get("configurations", []):
        specs += yaml.safe_load((folder / name).read_text())["images"]
    for image in k.get("images", []):
        for o in objects:
            for spec in specs:
                if spec.get("kind", o["kind"]) == o["kind"]:
                    _set_images(o, spec["path"].split("/"), image)
    return objects


def _matches(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    have = {"group": group, "version": version, "kind": obj["kind"]}
    have["name"] = obj["metadata"]["name"]
    return all(have[key] == value for key, value in target.items())


def apply_json_patch(doc: Obj, op: Obj) -> None:
    """One RFC 6902 operation (add, replace, remove), as kustomize applies it."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if isinstance(node, list):
        if kind == "add":
            node.insert(len(node) if last == "-" else int(last), op["value"])
            return
        index = int(last)
        assert 0 <= index < len(node), f"{op['path']}: no item {index}"
    else:
        assert kind == "add" or last in node, f"{op['path']}: nothing to {kind}"
        index = last  # type: ignore[assignment]
    if kind in ("add", "replace"):
        node[index] = op["value"]
    elif kind == "remove":
        del node[index]
    else:
        raise AssertionError(f"unsupported patch op {kind!r}")


def _set_images(node: Any, path: list[str], image: Obj) -> None:
    if not path:
        return
    head, rest = path[0], path[1:]
    if head.endswith("[]"):
        for item in node.get(head[:-2], []) if isinstance(node, dict) else []:
            _set_images(item, rest, image)
    elif not rest:
        if isinstance(node, dict) and isinstance(node.get(head), str):
            name = node[head].split("@")[0].rsplit(":", 1)[0]
            if name == image["name"]:
                name = image.get("newName", name)
                node[head] = f"{name}:{image['newTag']}" if "newTag" in image else name
    elif isinstance(node, dict) and head in node:
        _set_images(node[head], rest, image)


def pod_templates(obj: Obj) -> Iterator[Obj]:
    """The pod templates of a workload (a Deployment's, a RayCluster's head and workers)."""
    spec = obj.get("spec", {})
    if obj["kind"] == "Deployment":
        yield spec["template"]
    elif obj["kind"] == "RayCluster":
        yield spec["headGroupSpec"]["template"]
        for group in spec["workerGroupSpecs"]:
            yield group["template"]


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def check_cluster_file(text: str) -> list[Obj]:
    """The devices of a cluster device file, asserting the shape `llmos up --cluster`
    reads (deploy/README.md, "A Ray cluster")."""
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict) and set(doc) == {"devices"}, "one key: devices"
    devices = doc["devices"]
    assert isinstance(devices, list) and devices, "devices: a non-empty list"
    names = [d.get("name") for d in devices]
    assert len(set(names)) == len(names), f"device names repeat: {names}"
    allowed = {"name", "engine", "model_path", "slots", "ctx", "threads"}
    allowed |= {"resources", "replicas", "autoscale"}
    for d in devices:
        assert set(d) <= allowed, f"{d.get('name')}: unknown keys {set(d) - allowed}"
        assert isinstance(d["name"], str) and re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", d["name"])
        assert d["engine"] in ("llamacpp", "openai", "mock"), d["engine"]
        for key in ("slots", "ctx", "threads"):
            assert key not in d or (isinstance(d[key], int) and d[key] >= 1), (d["name"], key)
        res = d.get("resources", {})
        assert set(res) <= {"num_cpus", "num_gpus", "memory_gb", "custom"}, res
        for key in ("num_cpus", "num_gpus", "memory_gb"):
            assert key not in res or (isinstance(res[key], int | float) and res[key] >= 0), res
        assert all(v > 0 for v in res.get("custom", {}).values()), res
        replicas = d.get("replicas", {"min": 1, "max": 1})
        assert set(replicas) == {"min", "max"}, replicas
        assert 0 <= replicas["min"] <= replicas["max"] and replicas["max"] >= 1, replicas
        scale = d.get("autoscale", {})
        assert set(scale) <= {"queue_per_slot", "ttft_p95_s", "idle_s"}, scale
        assert all(isinstance(v, int | float) and v > 0 for v in scale.values()), scale
    return devices


# -- deploy/Dockerfile ------------------------------------------------------------------
def stages() -> list[dict[str, Any]]:
    """The Dockerfile's stages: name, base image and instructions (parsed by Docker's rules)."""
    out: list[dict[str, Any]] = []
    for ins in DockerfileParser(str(DEPLOY / "Dockerfile")).structure:
        if ins["instruction"] == "FROM":
            image, _, name = ins["value"].partition(" AS ")
            out.append({"name": name.strip() or None, "image": image.strip(), "ins": []})
        elif out and ins["instruction"] != "COMMENT":
            out[-1]["ins"].append((ins["instruction"], ins["value"]))
    return out


def values(stage: dict[str, Any], instruction: str) -> list[str]:
    return [v for i, v in stage["ins"] if i == instruction]


def arg_default(stage: dict[str, Any], name: str) -> str:
    [value] = [v.split("=", 1)[1] for v in values(stage, "ARG") if v.startswith(f"{name}=")]
    return value.strip('"')


def image_home() -> str:
    home = re.search(r"LLMOS_HOME=(\S+)", " ".join(values(stages()[-1], "ENV")))
    assert home, "the image sets LLMOS_HOME"
    return home.group(1)


def option(args: list[str], name: str) -> str:
    assert args.count(name) == 1, (name, args)
    return args[args.index(name) + 1]
