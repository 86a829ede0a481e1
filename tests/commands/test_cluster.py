"""cluster/ definitions checked offline (the launcher files, the KubeRay manifests, node types against the
experiments, the cloud notices the preemption watcher reads), and datasets downloaded from a loopback HTTP
server and uploaded to the loopback S3 server. Jobs on a real cluster: tests/distributed/test_multinode.py."""
import copy
import functools
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from cyclegan.core.data import DataError

from tests.helpers import ray_autoscaler
from tests.helpers.metadata import FakeInstanceMetadata
from tests.helpers.ray_nodes import DRAIN_S

ROOT = Path(__file__).parents[2]
CLUSTER = ROOT / "cluster"


def kuberay_documents(name: str) -> list[dict]:
    """A KubeRay manifest's documents: its RayCluster or RayJob first, then its NetworkPolicies."""
    return list(yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()))


@pytest.mark.parametrize("name", ["aws-spot.yaml", "gcp-spot.yaml"])
def test_launcher_configs_pass_rays_cluster_schema(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    ray_autoscaler.validate(config)  # raises on a schema violation
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert {"gpu_spot", "gpu_ondemand"} <= set(types), "a spot worker type and its on-demand fallback"
    assert all(t.get("min_workers", 0) <= t.get("max_workers", 0) for n, t in types.items() if n != "head")
    assert any("-e ~/cyclegan" in c for c in config["setup_commands"])  # the project on every node
    broken = copy.deepcopy(config)
    broken["available_node_types"]["head"]["resources"] = {"CPU": 0.5}  # the schema wants whole numbers
    with pytest.raises(Exception):
        ray_autoscaler.validate(broken)
    broken = dict(config, max_worker=3)  # a typo at the top level
    with pytest.raises(Exception):
        ray_autoscaler.validate(broken)


def test_aws_node_configs_are_valid_run_instances_parameters():
    import botocore.session
    from botocore.validate import ParamValidator
    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    config = yaml.safe_load((CLUSTER / "aws-spot.yaml").read_text())
    types = config["available_node_types"]
    for name, node_type in types.items():
        report = ParamValidator().validate({**node_type["node_config"], "MinCount": 1, "MaxCount": 1}, shape)
        assert not report.has_errors(), (name, report.generate_report())
    assert types["gpu_spot"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in types["gpu_ondemand"]["node_config"]  # the on-demand fallback
    typo = {**types["gpu_spot"]["node_config"], "InstanceTyp": "g5.xlarge", "MinCount": 1, "MaxCount": 1}
    assert ParamValidator().validate(typo, shape).has_errors()


# vCPUs and GPUs of the instance types the launcher files name (AWS's and Google Cloud's published sizes).
INSTANCE_TYPES = {"m6i.2xlarge": (8, 0), "g5.xlarge": (4, 1), "g5.2xlarge": (8, 1), "g5.12xlarge": (48, 4),
                  "n2-standard-8": (8, 0), "g2-standard-8": (8, 1)}
HEAD_MEMORY_GIB = {"m6i.2xlarge": 32, "n2-standard-8": 32}  # the head types' memory (AWS's, Google Cloud's)
RAY_MEMORY_SHARE = 0.6  # of a node's memory that Ray offers as its "memory" resource, at least (the rest: object store, Ray)
DATA_CPUS = 1  # what a worker node keeps for Ray Data's tasks besides its training workers


def node_types() -> dict[str, dict]:
    """Every worker node type of the shipped cluster files: its Ray resources, as Ray would see them."""
    found = {}
    for name in ("aws-spot.yaml", "gcp-spot.yaml"):
        config = yaml.safe_load((CLUSTER / name).read_text())
        for type_name, node in config["available_node_types"].items():
            found[f"{name}:{type_name}"] = {"head": type_name == config["head_node_type"], **node["resources"]}
    for name in ("raycluster.yaml", "rayjob-sweep.yaml"):
        manifest = kuberay_documents(name)[0]
        spec = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
        head = spec["headGroupSpec"]
        found[f"{name}:head"] = {"head": True, "CPU": float(head["rayStartParams"].get("num-cpus", 0)),
                                 **json.loads(json.loads(head["rayStartParams"].get("resources", '"{}"')))}
        for group in spec["workerGroupSpecs"]:
            limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
            found[f"{name}:{group['groupName']}"] = {"head": False, "CPU": float(limits["cpu"]),
                                                     "GPU": int(limits.get("nvidia.com/gpu", 0))}
    return found


def test_declared_node_resources_match_their_instance_types():
    for name in ("aws-spot.yaml", "gcp-spot.yaml"):
        config = yaml.safe_load((CLUSTER / name).read_text())
        for type_name, node in config["available_node_types"].items():
            kind = node["node_config"].get("InstanceType") or node["node_config"]["machineType"]
            cpus, gpus = INSTANCE_TYPES[kind]
            declared = node["resources"]
            if type_name == config["head_node_type"]:
                assert declared["CPU"] == 0 and declared["driver"] >= 1, (name, "drivers only on the head")
                continue
            assert declared["CPU"] == cpus and declared.get("GPU", 0) == gpus, (name, type_name, kind, declared)
            accelerators = node["node_config"].get("guestAccelerators", [])
            if accelerators:
                assert sum(a["acceleratorCount"] for a in accelerators) == gpus


def test_every_experiment_fits_the_gpu_nodes_of_every_cluster():
    """A worker of each shipped experiment (its CPUs, GPU, and a CPU left for Ray Data) fits a worker node
    of each cluster file; a GPU experiment asks for GPUs explicitly, so an autoscaler starts GPU nodes."""
    from cyclegan.core.experiment import load_experiment
    nodes = node_types()
    checked = []
    for path in sorted((ROOT / "experiments").glob("sweep*.yaml")):
        exp = load_experiment(path)
        base = exp.base
        need_gpu = 1 if base.get("use_gpu") else 0
        cpus = float(base.get("cpus_per_worker", 1))
        if not any(str(p.dataroot or "").startswith(("s3://", "gs://")) for p in exp.pairs):
            continue  # a laptop sweep
        checked.append(path.name)
        assert need_gpu, f"{path.name}: a cluster sweep that does not ask for GPUs trains on CPUs"
        for cluster in {key.split(":")[0] for key in nodes}:
            workers = [n for key, n in nodes.items() if key.startswith(cluster + ":") and not n["head"]]
            assert any(n.get("GPU", 0) >= need_gpu and n["CPU"] >= cpus + DATA_CPUS for n in workers), \
                (path.name, cluster, cpus, workers)
            heads = [n for key, n in nodes.items() if key.startswith(cluster + ":") and n["head"]]
            assert heads and all(n.get("driver", 0) >= 1 and n["CPU"] == 0 for n in heads), (cluster, heads)
    assert checked, "no cluster sweep in experiments/ to check"


def shipped_bundles() -> dict[str, dict]:
    """What each shipped experiment asks of a worker node, per pair: a Ray Train worker's bundle, or an
    in-process sweep trial's (the project's own functions, which the runs use)."""
    from cyclegan.core.config import from_dict, load_yaml
    from cyclegan.core.experiment import PAIR_KEY, load_experiment, pair_config
    from cyclegan.distributed.sweep import trial_resources
    from cyclegan.distributed.train import worker_bundle
    bundles = {}
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        if path.name.startswith("sweep"):
            exp = load_experiment(path)
            configs = {pair.name: pair_config(exp, pair) for pair in exp.pairs}
            for name, cfg in configs.items():
                bundle = worker_bundle(cfg) if cfg.max_workers > 0 else \
                    trial_resources(configs, drivers=True)({PAIR_KEY: name}).bundles[0]
                bundles[f"{path.name}:{name}"] = bundle
        else:
            bundles[path.name] = worker_bundle(from_dict(load_yaml(path), source=path.name))
    return bundles


@pytest.mark.parametrize("name", ["aws-spot.yaml", "gcp-spot.yaml"])
def test_the_autoscaler_starts_spot_first_and_on_demand_when_spot_launches_are_refused(name, monkeypatch):
    """Ray's own scheduling code, with the shipped node types and every shipped experiment's worker bundle:
    spot first, on-demand once a spot launch was refused (what Ray's autoscaler records of a failed
    launch), spot again when that record ends. A resource on the spot type that no demand asks for
    (`spot: 1`) made on-demand the first choice; Ray's v2 autoscaler retries a refused spot launch as
    spot forever, so the head runs v1 with the project's scorer (cyclegan/distributed/autoscaling.py)."""
    import time

    from ray.autoscaler.node_launch_exception import NodeLaunchException

    from cyclegan.distributed import autoscaling
    config = yaml.safe_load((CLUSTER / name).read_text())
    head_start = " ".join(config["head_start_ray_commands"])
    assert f"RAY_AUTOSCALER_UTILIZATION_SCORER={autoscaling.SCORER} ray start --head" in head_start
    assert "RAY_enable_autoscaler_v2=0 " in head_start
    # What the head reads: the config `ray up` writes there (this file, as Ray prepares it).
    monkeypatch.setenv("RAY_AUTOSCALER_UTILIZATION_SCORER", autoscaling.SCORER)
    monkeypatch.setenv(autoscaling.CONFIG_VARIABLE, str(CLUSTER / name))
    autoscaling.node_priorities.cache_clear()
    bundles = shipped_bundles()
    assert any(b.get("GPU") for b in bundles.values()) and len(bundles) >= 6, bundles
    now = [time.time()]
    tracker = ray_autoscaler.availability_tracker(timer=lambda: now[0], ttl=60)
    for what, bundle in bundles.items():
        assert ray_autoscaler.launched_v1(config, bundle, tracker.summary()) == {"gpu_spot": 1}, (name, what)
        assert ray_autoscaler.launched_v2(config, bundle) == ["gpu_spot"], (name, what)  # v2 too: spot first
    refused = NodeLaunchException("InsufficientInstanceCapacity", "no spot capacity in the zone", None)
    tracker.update_node_availability("gpu_spot", int(now[0]), refused)
    for what, bundle in bundles.items():
        assert ray_autoscaler.launched_v1(config, bundle, tracker.summary()) == {"gpu_ondemand": 1}, (name, what)
    now[0] += 120  # the refusal's record has expired: spot is tried again
    again = ray_autoscaler.launched_v1(config, bundles["sweep_s3.yaml:horse2zebra"], tracker.summary())
    assert again == {"gpu_spot": 1}
    on_demand = config["available_node_types"]["gpu_ondemand"]["node_config"]
    assert "InstanceMarketOptions" not in on_demand and on_demand.get("scheduling", {}).get(
        "provisioningModel", "STANDARD") == "STANDARD", name


LOCK = "requirements/lock-linux-x86_64-py311.txt"


def install_commands() -> dict[str, list[str]]:
    """Every command in cluster/ that installs Python packages, by file."""
    found: dict[str, list[str]] = {}

    def strings(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)
    for path in sorted(CLUSTER.rglob("*")):
        if path.suffix in (".yaml", ".yml"):
            texts = [s for doc in yaml.safe_load_all(path.read_text()) for s in strings(doc)]
        elif path.name == "Dockerfile":
            texts = path.read_text().replace("\\\n", " ").splitlines()
        else:
            continue
        commands = [part for text in texts for part in text.split("&&") if "pip install" in part
                    or "pip3 install" in part or "uv pip" in part or "conda install" in part]
        if commands:
            found[str(path.relative_to(ROOT))] = commands
    return found


def test_every_install_in_cluster_uses_the_lock_in_the_locked_ray_and_python():
    """A node that joins a week later must run what the head runs and what the tests ran: every install
    command in cluster/ is constrained by the lock, and every image is Ray's image of the locked Ray for
    the lock's Python."""
    import re
    lock = (ROOT / LOCK).read_text()
    ray_version = re.search(r"^ray==(\S+)$", lock, re.M).group(1)
    python_tag = re.search(r"-(py\d+)\.txt$", LOCK).group(1)
    commands = install_commands()
    assert set(commands) >= {"cluster/aws-spot.yaml", "cluster/gcp-spot.yaml", "cluster/Dockerfile"}, commands
    for where, found in commands.items():
        for command in found:
            assert re.search(rf"(^|\s)(-c|-r|--constraint|--requirement)[ =]\S*{re.escape(LOCK)}(\s|$)",
                             command), f"{where}: an install that does not use the lock: {command.strip()}"
    images = {"cluster/Dockerfile": re.findall(r"^FROM (\S+)", (CLUSTER / "Dockerfile").read_text(), re.M)}
    for name in ("aws-spot.yaml", "gcp-spot.yaml"):
        images[name] = [yaml.safe_load((CLUSTER / name).read_text())["docker"]["image"]]
    for where, tags in images.items():
        assert tags and all(tag == f"rayproject/ray:{ray_version}-{python_tag}-gpu" for tag in tags), (where, tags)
    # The check is not blind: an unlocked install is found.
    assert not re.search(rf"-c \S*{re.escape(LOCK)}", "pip install -e ~/cyclegan")


def test_every_cluster_head_holds_its_sweeps_trial_drivers_at_once():
    """A trial that drives a Ray Train run keeps its process, its Train controller and Ray Data's split
    coordinator on the head (the controller goes where the trial runs; both ask Ray for nothing); the
    trial asks for their memory, so a head holds as many as it can: enough for each cluster sweep's
    max_concurrent_trials."""
    from cyclegan.core.experiment import load_experiment
    from cyclegan.distributed.sweep import TRIAL_DRIVER_MEMORY
    heads = {}
    for name in ("aws-spot.yaml", "gcp-spot.yaml"):
        config = yaml.safe_load((CLUSTER / name).read_text())
        node = config["available_node_types"][config["head_node_type"]]["node_config"]
        heads[name] = HEAD_MEMORY_GIB[node.get("InstanceType") or node["machineType"]] * 2**30
    for name in ("raycluster.yaml", "rayjob-sweep.yaml"):
        manifest = kuberay_documents(name)[0]
        spec = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
        limit = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        heads[name] = int(limit.removesuffix("Gi")) * 2**30  # Ray takes the container's limit as the node's
    checked = []
    for path in sorted((ROOT / "experiments").glob("sweep*.yaml")):
        exp = load_experiment(path)
        if exp.search.max_concurrent_trials and exp.base.get("num_workers", "0") != "0":
            checked.append(path.name)
            for head, memory in heads.items():
                assert exp.search.max_concurrent_trials * TRIAL_DRIVER_MEMORY <= RAY_MEMORY_SHARE * memory, (path.name, head)
    assert checked == ["sweep_s3.yaml"]


def test_spot_nodes_run_the_preemption_watcher():
    for name, provider in (("aws-spot.yaml", "aws"), ("gcp-spot.yaml", "gcp")):
        commands = " ".join(yaml.safe_load((CLUSTER / name).read_text())["worker_start_ray_commands"])
        assert f"cyclegan cluster watch-preemption --provider {provider}" in commands, name
    # On Kubernetes the pod's SIGTERM makes `ray start --block` drain its node itself (reason preemption),
    # which Ray Train's workers take as a notice (tests/distributed/test_multinode.py): no preStop hook,
    # and the pod's grace period holds Ray's drain and the exit after it.
    for name in ("raycluster.yaml", "rayjob-sweep.yaml"):
        manifest = kuberay_documents(name)[0]
        spec = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
        for group in spec["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            container = pod["containers"][0]
            assert "lifecycle" not in container, (name, "a preStop hook")
            drain = float({e["name"]: e["value"] for e in container["env"]}["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"])
            assert drain == DRAIN_S and drain + 5 <= pod["terminationGracePeriodSeconds"], (name, drain)


def test_a_rerun_start_kills_the_old_watcher_before_ray_starts_and_without_a_drain():
    """`ray up` reruns the start commands on a live node: the old watcher, stopped by SIGTERM after
    `ray start`, drained the node just started (its SIGTERM handler drains this node)."""
    for name in ("aws-spot.yaml", "gcp-spot.yaml"):
        commands = yaml.safe_load((CLUSTER / name).read_text())["worker_start_ray_commands"]
        kills = [i for i, c in enumerate(commands) if c.startswith("pkill") and "watch-preemption" in c]
        starts = [i for i, c in enumerate(commands) if c.startswith(("ray start", "ray stop"))]
        watchers = [i for i, c in enumerate(commands) if "cyclegan cluster watch-preemption --provider" in c]
        assert kills and max(kills) < min(starts) < max(starts) < min(watchers), (name, commands)
        assert all(commands[i].startswith("pkill -KILL ") for i in kills), name  # no handler runs


def test_cloud_notices_are_read_from_instance_metadata():
    """The watcher's view of AWS (IMDSv2, spot instance-action) and GCE (instance/preempted) metadata,
    served on 127.0.0.1: nothing before the notice, the deadline after it."""
    import time

    from cyclegan.commands.cluster import GCE_NOTICE_S, aws_notice, gcp_notice
    aws = FakeInstanceMetadata()
    try:
        assert aws_notice(aws.url) is None
        aws.reclaim(in_seconds=120)
        notice = aws_notice(aws.url)
        assert notice.what == "spot instance-action terminate" and abs(notice.deadline - time.time() - 120) < 3
    finally:
        aws.close()
    preempted = {"value": "FALSE"}

    class Gce(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            ok = self.path == "/computeMetadata/v1/instance/preempted" and self.headers["Metadata-Flavor"] == "Google"
            body = preempted["value"].encode() if ok else b""
            self.send_response(200 if ok else 403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gce)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert gcp_notice(url) is None
        preempted["value"] = "TRUE"
        notice = gcp_notice(url)
        assert notice.what == "GCE preemption" and abs(notice.deadline - time.time() - GCE_NOTICE_S) < 3
    finally:
        server.shutdown()
        server.server_close()


def test_gcp_workers_are_spot_gpus():
    config = yaml.safe_load((CLUSTER / "gcp-spot.yaml").read_text())
    node = config["available_node_types"]["gpu_spot"]["node_config"]
    assert node["scheduling"]["provisioningModel"] == "SPOT" and node["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert node["guestAccelerators"][0]["acceleratorCount"] >= 1
    assert config["available_node_types"]["gpu_spot"]["resources"]["GPU"] >= 1


# The KubeRay v1 CRD fields these manifests use, with their types.
TOLERATION_OPERATORS = {"Exists", "Equal"}
TOLERATION_EFFECTS = {"NoSchedule", "PreferNoSchedule", "NoExecute"}


def check_pod_template(template, where):
    spec = template["spec"]
    containers = spec["containers"]
    assert isinstance(containers, list) and containers, f"{where}: no containers"
    for c in containers:
        assert isinstance(c["name"], str) and isinstance(c["image"], str), f"{where}: container name/image"
        for kind in ("requests", "limits"):
            for key, value in c.get("resources", {}).get(kind, {}).items():
                assert isinstance(value, (str, int)), f"{where}: resources.{kind}.{key}"
    for t in spec.get("tolerations", []):
        assert t["operator"] in TOLERATION_OPERATORS and t.get("effect") in TOLERATION_EFFECTS, f"{where}: {t}"
        assert ("value" in t) == (t["operator"] == "Equal"), f"{where}: toleration value with {t['operator']}"
    assert all(isinstance(v, str) for v in spec.get("nodeSelector", {}).values()), f"{where}: nodeSelector values"
    return spec


def check_ray_cluster_spec(spec, where):
    head = spec["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), f"{where}: rayStartParams are strings"
    check_pod_template(head["template"], f"{where}.headGroupSpec")
    groups = spec["workerGroupSpecs"]
    assert groups, f"{where}: no worker group"
    for g in groups:
        assert isinstance(g["groupName"], str) and isinstance(g["rayStartParams"], dict)
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"]
        pod = check_pod_template(g["template"], f"{where}.{g['groupName']}")
        limits = pod["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1, f"{where}: the worker group has no GPU"
        assert any("spot" in k for k in pod["nodeSelector"]), f"{where}: workers not on spot nodes"
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]), f"{where}: no GPU toleration"
    assert spec.get("rayVersion", "").startswith("2."), f"{where}: rayVersion"


def test_kuberay_raycluster_manifest():
    manifest = kuberay_documents("raycluster.yaml")[0]
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    check_ray_cluster_spec(manifest["spec"], "RayCluster.spec")


def test_kuberay_rayjob_runs_a_valid_sweep():
    from cyclegan.core.experiment import load_experiment
    manifest = kuberay_documents("rayjob-sweep.yaml")[0]
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    assert isinstance(spec["shutdownAfterJobFinishes"], bool)
    yaml.safe_load(spec["runtimeEnvYAML"])  # a YAML document inside the manifest
    check_ray_cluster_spec(spec["rayClusterSpec"], "RayJob.spec.rayClusterSpec")
    command = spec["entrypoint"].split()
    assert command[:2] == ["cyclegan", "sweep"]
    exp = load_experiment(ROOT / command[2])  # the experiment it names exists and validates
    assert exp.storage_path.startswith(("s3://", "gs://"))  # results in object storage, not on pods
    assert all(p.dataroot and p.dataroot.startswith(("s3://", "gs://")) for p in exp.pairs)



# ---------------------------------------------------------------- who may connect to the KubeRay pods
NAMESPACE = "ml"  # where the manifests are applied (any one)
STRANGER_IP = "203.0.113.9"  # an address outside the Kubernetes cluster


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) against a pod's or namespace's labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    tests = {"In": lambda e: labels.get(e["key"]) in e["values"],
             "NotIn": lambda e: labels.get(e["key"]) not in e["values"],
             "Exists": lambda e: e["key"] in labels, "DoesNotExist": lambda e: e["key"] not in labels}
    return all(tests[e["operator"]](e) for e in selector.get("matchExpressions") or [])


def peer_admits(peer: dict, source: dict) -> bool:
    """One ``from`` entry of an ingress rule against a source (a pod: labels and namespace; or an ``ip``)."""
    import ipaddress
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(source["ip"])
        return ip in ipaddress.ip_network(peer["ipBlock"]["cidr"]) and not any(
            ip in ipaddress.ip_network(cidr) for cidr in peer["ipBlock"].get("except", []))
    if "labels" not in source:
        return False  # pod and namespace selectors admit pods only
    spaces = peer.get("namespaceSelector")  # none: the policy's own namespace only
    in_space = source["namespace"] == NAMESPACE if spaces is None else \
        selects(spaces, {"kubernetes.io/metadata.name": source["namespace"]})
    return in_space and selects(peer.get("podSelector") or {}, source["labels"])


def rule_admits(rule: dict, port: int, source: dict) -> bool:
    ports = rule.get("ports") or [{}]  # none: every port
    on_port = any(p.get("protocol", "TCP") == "TCP" and (p.get("port") is None or p["port"] == port or (
        p.get("endPort") is not None and p["port"] <= port <= p["endPort"])) for p in ports)
    peers = rule.get("from") or []  # none: from everywhere
    return on_port and (not peers or any(peer_admits(peer, source) for peer in peers))


def admitted(policies: list[dict], target: dict, port: int, source: dict) -> bool:
    """Whether NetworkPolicy lets ``source`` connect to a pod labelled ``target`` on TCP ``port``: yes when
    no policy selects the pod for ingress, else when a rule of one that does admits it."""
    applying = [p["spec"] for p in policies if selects(p["spec"]["podSelector"], target)
                and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    return not applying or any(rule_admits(rule, port, source) for spec in applying
                               for rule in spec.get("ingress") or [])


def kuberay_pod_labels(cluster: str, template: dict, kind: str, group: str) -> dict:
    """The labels KubeRay puts on a Ray pod: its template's, and KubeRay's own (ray-operator's labelPod)."""
    return {**((template.get("metadata") or {}).get("labels") or {}), "ray.io/cluster": cluster,
            "ray.io/node-type": kind, "ray.io/group": group, "ray.io/identifier": f"{cluster}-{kind}",
            "ray.io/is-ray-node": "yes", "app.kubernetes.io/name": "kuberay",
            "app.kubernetes.io/created-by": "kuberay-operator"}


def ray_pods(name: str) -> tuple[dict, list[dict], list[dict]]:
    """A manifest's head pod labels, its worker groups' pod labels, and its NetworkPolicies."""
    manifest, *others = kuberay_documents(name)
    if manifest["kind"] == "RayCluster":
        spec, cluster = manifest["spec"], manifest["metadata"]["name"]
    else:  # KubeRay names a RayJob's cluster after it, with a random suffix
        spec, cluster = manifest["spec"]["rayClusterSpec"], f"{manifest['metadata']['name']}-x7k2q"
    head = kuberay_pod_labels(cluster, spec["headGroupSpec"]["template"], "head", "headgroup")
    workers = [kuberay_pod_labels(cluster, g["template"], "worker", g["groupName"]) for g in spec["workerGroupSpecs"]]
    policies = [d for d in others if d["apiVersion"] == "networking.k8s.io/v1" and d["kind"] == "NetworkPolicy"]
    assert len(policies) == len(others), f"{name}: {[d['kind'] for d in others]}"
    return head, workers, policies


def pod(labels: dict, namespace: str = NAMESPACE) -> dict:
    return {"labels": labels, "namespace": namespace, "ip": "10.8.3.17"}


RAY_PORTS = (6379, 8265, 10001, 8076, 8080, 10002, 19999, 52365, 41234)  # GCS, dashboard, client, object
# manager, metrics, worker ports, dashboard agent, one that Ray picked at random (a raylet's)


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob-sweep.yaml"])
def test_kuberay_pods_admit_their_own_ray_traffic_and_no_one_else(name):
    """The Jobs API (8265), the GCS and every raylet listen on all of a pod's addresses, next to the
    bucket's credentials: a NetworkPolicy selects the head (by the labels KubeRay gives it) and the
    workers, lets the cluster's own pods reach each other on every Ray port, and keeps the dashboard,
    the GCS and the client port from other pods, other namespaces, another Ray cluster, and outside."""
    head, workers, policies = ray_pods(name)
    assert policies, f"{name}: no NetworkPolicy: any pod may submit a job to the dashboard"
    assert all(isinstance(p.get("port", 0), int) for policy in policies for rule in policy["spec"].get("ingress") or []
               for p in rule.get("ports") or []), "named ports: this check reads port numbers only"
    for target in (head, *workers):
        for source in (head, *workers):
            for port in RAY_PORTS:
                assert admitted(policies, target, port, pod(source)), (name, target["ray.io/group"], port)
    other_cluster = dict(head, **{"ray.io/cluster": "someone-else", "app.kubernetes.io/instance": "x"})
    strangers = [pod({"app": "web"}), pod({"app": "web"}, namespace="other"), pod(other_cluster),
                 pod(head, namespace="other"), {"ip": STRANGER_IP}]
    for stranger in strangers:
        for port in (8265, 6379, 10001):
            assert not admitted(policies, head, port, stranger), (name, port, stranger)
    # The check is not blind: a policy that opens the dashboard to all is seen.
    opened = [*policies, {"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 8265}]}]}}]
    assert admitted(opened, head, 8265, {"ip": STRANGER_IP}) and admitted([], head, 8265, {"ip": STRANGER_IP})


def test_the_rayjob_submitter_and_the_kuberay_operator_reach_the_dashboard_only():
    """KubeRay's submitter pod (`ray job submit` to the head's 8265; a Kubernetes Job named after the
    RayJob, whose pods carry the Job controller's labels) and the KubeRay operator (it reads the job's
    status there, from its own namespace) reach the dashboard, and nothing else of the cluster."""
    head, workers, policies = ray_pods("rayjob-sweep.yaml")
    submitter = pod({"batch.kubernetes.io/job-name": "cyclegan-sweep", "job-name": "cyclegan-sweep",
                     "batch.kubernetes.io/controller-uid": "5d0c1f6e"})
    legacy_submitter = pod({"job-name": "cyclegan-sweep", "controller-uid": "5d0c1f6e"})  # Kubernetes < 1.27
    operator = pod({"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/component": "kuberay-operator",
                    "app.kubernetes.io/instance": "kuberay-operator"}, namespace="kuberay-system")
    for source in (submitter, legacy_submitter, operator):
        assert admitted(policies, head, 8265, source), source
        assert not any(admitted(policies, target, port, source) for target in (head, *workers)
                       for port in RAY_PORTS if not (target is head and port == 8265)), source


# ---------------------------------------------------------------- datasets
@pytest.fixture
def dataset_server(tmp_path, tiny_pair):
    """A loopback HTTP server with tiny_pair zipped as <name>.zip in the published layout, and a bad zip."""
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(site / "horse2zebra.zip", "w") as z:
        for path in sorted(tiny_pair.rglob("*.png")):
            rel = path.relative_to(tiny_pair)
            if rel.parts[0] in ("trainA", "trainB", "testA", "testB"):
                z.write(path, f"horse2zebra/{rel.as_posix()}")
    with zipfile.ZipFile(site / "maps.zip", "w") as z:
        z.writestr("../../escape.txt", "outside")
    (site / "facades.zip").write_bytes(b"not a zip")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_a_dataset_by_name_to_a_folder_and_to_s3(dataset_server, tiny_pair, tmp_path, s3, capsys):
    from cyclegan.cli import main
    assert main(["data", "download", "horse2zebra", "--out", str(tmp_path / "datasets"), "--url", dataset_server]) == 0
    local = tmp_path / "datasets" / "horse2zebra"
    for split in ("trainA", "trainB", "testA", "testB"):
        assert sorted(p.name for p in (local / split).iterdir()) == sorted(p.name for p in (tiny_pair / split).iterdir())
    s3.mkdir("datasets-bucket")
    assert main(["data", "download", "horse2zebra", "--out", "s3://datasets-bucket/public",
                 "--url", dataset_server]) == 0
    uploaded = [k for k in s3.ls("datasets-bucket/public/horse2zebra/trainA") if not k.endswith("/")]  # no marker
    assert len(uploaded) == len(list((tiny_pair / "trainA").iterdir()))
    assert main(["data", "download", "maps", "--out", str(tmp_path / "d2"), "--url", dataset_server]) == 2
    assert "unsafe path '../../escape.txt'" in capsys.readouterr().err
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()
    with pytest.raises(DataError, match="facades.zip: not a zip archive"):
        from cyclegan.commands.data import download
        download("facades", str(tmp_path / "d3"), base_url=dataset_server)
    with pytest.raises(DataError, match="cityscapes.zip: download failed"):
        download("cityscapes", str(tmp_path / "d4"), base_url=dataset_server)  # 404


def test_upload_a_local_dataset_and_train_from_it(tiny_pair, tmp_path, s3, capsys):
    from cyclegan.cli import main
    s3.mkdir("upload-bucket")
    assert main(["data", "upload", str(tiny_pair), "s3://upload-bucket/seasons"]) == 0
    for split in ("trainA", "trainB", "testA", "testB"):  # every file whole (pyarrow's parallel copy)
        local = {p.name: p.read_bytes() for p in (tiny_pair / split).iterdir()}
        keys = [key for key in s3.find(f"upload-bucket/seasons/{split}") if not key.endswith("/")]  # no markers
        assert {key.rsplit("/", 1)[1]: s3.cat(key) for key in keys} == local
    assert main(["data", "upload", str(tmp_path), "s3://upload-bucket/x"]) == 2
    assert "no trainA, trainB folder" in capsys.readouterr().err


def test_upload_copies_images_only_and_reads_a_link_as_its_file(tiny_pair, tmp_path, s3):
    """What `cyclegan data upload` copies (issue 22: decided and said in the README): image files of the
    splits, a link to an image file inside the folder as the file; notes, hidden files and links to devices stay
    behind."""
    import shutil

    from cyclegan.cli import main
    root = tmp_path / "ds"
    for split in ("trainA", "trainB"):
        shutil.copytree(tiny_pair / split, root / split)
    (root / "trainA" / "notes.txt").write_text("not an image")
    (root / "trainA" / ".DS_Store").write_bytes(b"x")
    elsewhere = root / "originals" / "elsewhere.png"  # inside the folder (a link out of it stays behind)
    elsewhere.parent.mkdir(parents=True)
    shutil.copy(sorted((tiny_pair / "testA").glob("*.png"))[0], elsewhere)
    (root / "trainA" / "linked.png").symlink_to(elsewhere)
    (root / "trainA" / "zero.png").symlink_to("/dev/zero")
    s3.mkdir("upload-only")
    assert main(["data", "upload", str(root), "s3://upload-only/ds"]) == 0
    names = sorted(p.rsplit("/", 1)[1] for p in s3.find("upload-only/ds/trainA") if not p.endswith("/"))
    assert names == sorted([p.name for p in (tiny_pair / "trainA").iterdir()] + ["linked.png"])
    assert s3.cat("upload-only/ds/trainA/linked.png") == elsewhere.read_bytes()


# The folders the commands write to by default, below the folder they run in.
RUN_OUTPUTS = ("checkpoints", "results", "sweeps", "reports", "runs", "datasets")


@pytest.mark.slow  # an end-to-end command run
def test_a_job_working_dir_packs_the_project_not_the_runs(ray_session, tmp_path, monkeypatch):
    """`ray job submit --working-dir .` after a local run, its test gallery, a tiny sweep and its report:
    Ray's own packaging (which honours .gitignore and .rayignore) takes the project's files only, and the
    package stays far below Ray's size limit."""
    import subprocess

    from cyclegan.cli import main
    from cyclegan.distributed.ray_internals import package_working_dir
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    tracked = {name for name in tracked.decode().split("\0") if name and (ROOT / name).is_file()}
    repo = tmp_path / "repo"
    for name in tracked:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes((ROOT / name).read_bytes())
    monkeypatch.chdir(repo)
    tiny = ["--builtin", "seasons", "--builtin_size", "24", "--builtin_count", "8", "--netG", "resnet_6blocks",
            "--ngf", "4", "--ndf", "4", "--load_size", "28", "--crop_size", "24", "--num_threads", "0"]
    assert main(["train", *tiny, "--name", "demo", "--n_epochs", "1", "--n_epochs_decay", "0"]) == 0
    assert main(["test", *tiny, "--name", "demo"]) == 0
    (repo / "tiny.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "storage_path": "./sweeps", "datasets": ["seasons"],
        "base": {**{k.lstrip("-"): v for k, v in zip(tiny[2::2], tiny[3::2])}, "n_epochs": 1, "n_epochs_decay": 0,
                 "cpus_per_worker": 0.5},
        "space": {"pool_size": [0, 4]},
        "search": {"num_samples": 1, "max_concurrent_trials": 1, "eval_images": 4, "grid_images": 2}}))
    assert main(["sweep", "tiny.yaml"]) == 0
    assert main(["report", "sweeps/tiny", "--out", "reports/tiny"]) == 0
    written = {p.relative_to(repo).parts[0] for p in repo.rglob("*") if p.is_file()
               and p.relative_to(repo).as_posix() not in tracked}
    assert {"checkpoints", "results", "sweeps", "reports"} <= written, written  # the runs wrote there
    package = tmp_path / "package.zip"
    limit = package_working_dir(str(repo), package)  # as `ray job submit --working-dir` packs it
    with zipfile.ZipFile(package) as z:
        packed = {info.filename for info in z.infolist() if not info.is_dir()}
    assert not {name for name in packed if name.split("/")[0] in RUN_OUTPUTS}, "run outputs in the package"
    assert packed <= tracked | {"tiny.yaml"}, sorted(packed - tracked)[:10]
    assert package.stat().st_size < min(4 << 20, limit // 10), package.stat().st_size
