"""deploy/k8s and deploy/cluster.yaml: the Kubernetes manifests validated offline
against the Kubernetes schemas (kubernetes-validate; the RayCluster custom resource by
hand, after KubeRay's types), the kustomize directories rendered (tests/_deploy.py),
and the references between the objects checked: a Service selects its pods, a volume
names a claim, secret or config map that exists, the kernel's options name the Ray
head, the device file and the vLLM model that are there."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.devices import cluster_spec
from llmos.errors import InvalidRequest
from llmos.params import DEFAULT_PORT
from tests._deploy import (
    DEPLOY,
    K8S,
    ROOT,
    Obj,
    apply_json_patch,
    check_cluster_file,
    find,
    kustomization,
    load_all,
    option,
    pod_templates,
    render,
    stages,
    values,
)

OVERLAYS = ("base", "ray", "vllm")
KUBE_VERSION = kubernetes_validate.latest_version()


# -- Kubernetes ------------------------------------------------------------------------
def validate(obj: Obj) -> None:
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        raise AssertionError(
            f"{obj['kind']}/{obj['metadata']['name']}: {where}: {e.message}"
        ) from None


def as_pod(template: Obj) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", **template}


def test_every_manifest_file_validates_against_the_kubernetes_schemas() -> None:
    checked: set[str] = set()
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name in ("kustomization.yaml", "kustomizeconfig.yaml"):
            continue
        for obj in load_all(path):
            if obj["kind"] == "RayCluster":  # a custom resource: by hand, below
                for template in pod_templates(obj):
                    validate(as_pod(template))
            else:
                validate(obj)
            checked.add(obj["kind"])
    kinds = {"Namespace", "Secret", "PersistentVolumeClaim", "Deployment", "Service"}
    assert checked == kinds | {"ConfigMap", "RayCluster"}


def test_the_validator_catches_a_bad_manifest() -> None:
    """The check above has teeth: a misspelt field and a wrong type are refused."""
    [deployment] = load_all(K8S / "base" / "deployment.yaml")
    apply_json_patch(deployment, {"op": "add", "path": "/spec/replica", "value": 2})
    with pytest.raises(AssertionError, match="replica"):
        validate(deployment)
    [service] = load_all(K8S / "base" / "service.yaml")
    apply_json_patch(service, {"op": "replace", "path": "/spec/ports/0/port", "value": "x"})
    with pytest.raises(AssertionError, match="ports"):
        validate(service)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_to_objects_that_reference_each_other(overlay: str) -> None:
    objects = render(K8S / overlay)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(set(names)) == len(names), names
    for obj in objects:
        if obj["kind"] != "RayCluster":
            validate(obj)
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == "llmos"
    claims = {o["metadata"]["name"] for o in find(objects, "PersistentVolumeClaim")}
    maps = {o["metadata"]["name"]: o["data"] for o in find(objects, "ConfigMap")}
    secrets = {o["metadata"]["name"]: o["stringData"] for o in find(objects, "Secret")}
    pods = [t for o in objects for t in pod_templates(o)]
    for pod in pods:
        spec = pod["spec"]
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0, pod["metadata"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in v:
                assert v["configMap"]["name"] in maps
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["resources"]["requests"] and c["resources"]["limits"]
            assert ":" in c["image"], f"{c['name']}: image without a tag: {c['image']}"
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, mount
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in secrets[ref["name"]], ref
    for service in find(objects, "Service"):
        selector = service["spec"]["selector"].items()
        [pod] = [p for p in pods if selector <= p["metadata"]["labels"].items()]
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def kernel_of(objects: list[Obj]) -> tuple[Obj, list[str]]:
    [deployment] = find(objects, "Deployment", "llmos-kernel")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_kernels_options_are_options_of_llmos_up(overlay: str) -> None:
    """`llmos up ARGS --help` parses every option before it prints the help: an option
    that `llmos up` lacks (or one without its value) fails, as it would in the pod."""
    _, args = kernel_of(render(K8S / overlay))
    assert args[:2] == ["llmos", "up"]
    app = build_app()
    done = CliRunner().invoke(app, [*args[1:], "--help"])
    assert done.exit_code == 0, done.output
    bad = CliRunner().invoke(app, [*args[1:], "--no-such-option", "--help"])
    assert bad.exit_code == 2


def test_base_runs_one_kernel_that_keeps_its_state_on_the_claim() -> None:
    objects = render(K8S / "base")
    deployment, args = kernel_of(objects)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one writer of SQLite
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    uid = values(stages()[-1], "USER")[-1].split(":")[0]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["enableServiceLinks"] is False  # no LLMOS_PORT=tcp://... from Service llmos
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert args[:2] == ["llmos", "up"] and option(args, "--port") == str(DEFAULT_PORT)
    assert option(args, "--host") == "0.0.0.0"
    assert int(option(args, "--threads")) == int(container["resources"]["limits"]["cpu"])
    env = {e["name"]: e for e in container["env"]}
    [mount] = container["volumeMounts"]
    assert env["LLMOS_HOME"]["value"] == mount["mountPath"]
    assert env["LLMOS_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "admin-token"
    assert container["image"] == "llmos:0.1.0"
    [service] = find(objects, "Service", "llmos")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == DEFAULT_PORT


def test_ray_overlay_points_the_kernel_at_the_raycluster_and_its_device_file() -> None:
    objects = render(K8S / "ray")
    deployment, args = kernel_of(objects)
    [cluster] = find(objects, "RayCluster")
    assert option(args, "--ray-address") == f"ray://{cluster['metadata']['name']}-head-svc:10001"
    path = Path(option(args, "--cluster"))
    pod = deployment["spec"]["template"]["spec"]
    [mount] = [
        m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == str(path.parent)
    ]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    [config] = find(objects, "ConfigMap", volume["configMap"]["name"])
    check_cluster_file(config["data"][path.name])


def test_raycluster_has_the_shape_kuberay_reads() -> None:
    """Fields as in KubeRay's ray.io/v1 RayCluster types; the same image everywhere."""
    objects = render(K8S / "ray")
    [cluster] = find(objects, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    known = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling"}
    assert set(spec) <= known | {"autoscalerOptions", "headServiceAnnotations", "suspend"}
    head = spec["headGroupSpec"]
    assert set(head) <= {
        "serviceType",
        "headService",
        "enableIngress",
        "rayStartParams",
        "template",
    }
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    assert head["rayStartParams"]["num-cpus"] == "0"  # no devices on the head
    ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert {6379, 8265, 10001} <= ports
    options = spec["autoscalerOptions"]
    assert options["upscalingMode"] in ("Default", "Aggressive", "Conservative")
    probe = {"name": "autoscaler", "image": "x", "securityContext": options["securityContext"]}
    validate(as_pod({"metadata": {"name": "x"}, "spec": {"containers": [probe]}}))
    [kernel] = kernel_of(objects)[0]["spec"]["template"]["spec"]["containers"]
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        fields = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts"}
        assert set(group) <= fields | {"rayStartParams", "template", "scaleStrategy"}
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert isinstance(group["rayStartParams"], dict)
    for template in pod_templates(cluster):
        [container] = template["spec"]["containers"]
        assert container["image"] == kernel["image"]
        assert container["lifecycle"]["preStop"]["exec"]["command"][-1] == "ray stop"


def test_ray_workers_fit_the_device_replicas_the_cluster_file_asks_for() -> None:
    """Every replica of the device file fits a worker pod (Ray counts a pod's limits,
    less its object store), and the workers' maximum holds the replicas' maximum."""
    objects = render(K8S / "ray")
    [cluster] = find(objects, "RayCluster")
    [config] = find(objects, "ConfigMap", "llmos-cluster")
    devices = check_cluster_file(config["data"]["cluster.yaml"])
    [group] = cluster["spec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    cpus = int(limits["cpu"])
    memory = int(limits["memory"].removesuffix("Gi")) * 2**30
    memory -= int(group["rayStartParams"]["object-store-memory"])
    per_pod = min(
        min(cpus // d["resources"]["num_cpus"], memory // (d["resources"]["memory_gb"] * 1e9))
        for d in devices
    )
    assert per_pod >= 1
    assert sum(d["replicas"]["max"] for d in devices) <= per_pod * group["maxReplicas"]
    assert sum(d["replicas"]["min"] for d in devices) <= per_pod * group["minReplicas"]


def test_vllm_overlay_serves_the_model_the_kernel_names() -> None:
    objects = render(K8S / "vllm")
    kernel, args = kernel_of(objects)
    [vllm] = find(objects, "Deployment", "vllm")
    [service] = find(objects, "Service", "vllm")
    [container] = vllm["spec"]["template"]["spec"]["containers"]
    port = service["spec"]["ports"][0]["port"]
    assert option(args, "--device-url") == f"http://{service['metadata']['name']}:{port}/v1"
    served = container["command"] + container["args"]
    assert served[:2] == ["vllm", "serve"]
    assert option(args, "--model-name") == option(served, "--served-model-name")
    assert option(args, "--slots") == option(served, "--max-num-seqs")
    assert int(option(args, "--ctx")) <= int(option(served, "--max-model-len"))
    assert option(served, "--port") == str(port)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert vllm["spec"]["strategy"] == {"type": "Recreate"}
    [client] = kernel["spec"]["template"]["spec"]["containers"]
    kernel_env = {e["name"]: e for e in client["env"]}
    vllm_env = {e["name"]: e for e in container["env"]}
    assert kernel_env["LLMOS_DEVICE_API_KEY"]["valueFrom"] == vllm_env["VLLM_API_KEY"]["valueFrom"]


def test_every_kustomization_names_files_that_exist() -> None:
    for overlay in OVERLAYS:
        folder = K8S / overlay
        k = kustomization(folder)
        for entry in [*k.get("resources", []), *k.get("configurations", [])]:
            assert (folder / entry).exists(), f"{overlay}: {entry}"
        for image in k.get("images", []):
            assert image["name"] == "llmos"


def test_render_refuses_what_it_cannot_render(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [missing.yaml]\n"
    )
    with pytest.raises(AssertionError, match=r"no resource missing\.yaml"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "patchesStrategicMerge: [x.yaml]\n"
    )
    with pytest.raises(AssertionError, match="patchesStrategicMerge"):
        render(tmp_path)
    doc = {"spec": {"args": ["a"]}}
    with pytest.raises(AssertionError, match="nothing to replace"):
        apply_json_patch(doc, {"op": "replace", "path": "/spec/argz", "value": 1})
    apply_json_patch(doc, {"op": "add", "path": "/spec/args/-", "value": "b"})
    assert doc == {"spec": {"args": ["a", "b"]}}


# -- the cluster device file -------------------------------------------------------------
def test_the_example_cluster_file_has_the_shape_llmos_reads() -> None:
    """deploy/cluster.yaml and the ConfigMap's copy: the documented shape, read by
    llmos's own loader to the same devices."""
    [device] = check_cluster_file((DEPLOY / "cluster.yaml").read_text())
    assert device["engine"] == "llamacpp" and device["replicas"] == {"min": 1, "max": 4}
    [config] = load_all(K8S / "ray" / "configmap.yaml")
    assert check_cluster_file(config["data"]["cluster.yaml"]) == [device]
    spec = cluster_spec.load(DEPLOY / "cluster.yaml")
    assert spec == cluster_spec.parse(yaml.safe_load(config["data"]["cluster.yaml"]))
    [group] = spec.devices
    assert (group.name, group.slots, group.max_replicas) == ("smollm2", 4, 4)
    assert group.resources.num_cpus == group.threads == 2


@pytest.mark.parametrize(
    "change",
    [
        "slots: 8",  # the control: a good change passes
        "engine: vllm",
        "replicas: {min: 3, max: 2}",
        "slots: 0",
        "resources: {num_cpu: 2}",
        "autoscale: {queue_per_slot: -1}",
        "colour: blue",
    ],
)
def test_a_malformed_cluster_file_is_caught(change: str) -> None:
    """Each broken line in place of a good one fails the shape check."""
    key = change.split(":")[0]
    text = (DEPLOY / "cluster.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.strip().startswith(f"{key}:")]
    changed = "\n".join(lines) + f"\n    {change}\n"
    if change == "slots: 8":
        [device] = check_cluster_file(changed)
        assert device["slots"] == 8 and cluster_spec.parse(yaml.safe_load(changed))
        return
    with pytest.raises(AssertionError):
        check_cluster_file(changed)
    with pytest.raises(InvalidRequest, match="cluster file: devices"):
        cluster_spec.parse(yaml.safe_load(changed))


def test_readme_explains_each_path() -> None:
    text = (DEPLOY / "README.md").read_text()
    for needle in (
        "docker compose",
        "ray start --head",
        "--ray-address",
        "kubectl apply -k deploy/k8s/ray",
        "kubectl apply -k deploy/k8s/vllm",
        "port-forward",
    ):
        assert needle in text, needle
    assert "deploy/README.md" in (ROOT / "README.md").read_text()
