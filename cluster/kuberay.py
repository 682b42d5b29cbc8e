"""Kubernetes manifests for a schedule's ticks, made from the templates in ``cluster/templates/kuberay``."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

TEMPLATES = Path(__file__).parent / "templates"


def template(name: str) -> dict:
    """A template as a mapping (``kuberay/raycluster.yaml``, ``aws-gpu.yaml``, ...)."""
    return yaml.safe_load((TEMPLATES / name).read_text())


def _tick_command(name: str, state: str) -> list[str]:
    return ["actlake", "schedule", "run", name, "--state", state]


def _fill_pods(cluster_spec: dict, image: str, secret: str, gpus: int, workers: int) -> None:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec.get("workerGroupSpecs", [])]
    for group in groups:
        for c in group["template"]["spec"]["containers"]:
            c["image"] = image
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    ref["name"] = secret
    for w in cluster_spec.get("workerGroupSpecs", []):
        w["replicas"] = w["minReplicas"] = w["maxReplicas"] = workers
        for c in w["template"]["spec"]["containers"]:
            limits = c.setdefault("resources", {}).setdefault("limits", {})
            if gpus:
                limits["nvidia.com/gpu"] = str(gpus)
            else:
                limits.pop("nvidia.com/gpu", None)


def raycronjob(name: str, cron: str, state: str, image: str, namespace: str, secret: str, gpus: int, workers: int,
               ray_cluster: str = "") -> dict:
    """A KubeRay RayCronJob whose RayJob runs ``actlake schedule run NAME --state STATE`` on each cron match."""
    doc = copy.deepcopy(template("kuberay/raycronjob-tick.yaml"))
    doc["metadata"] = {"name": f"actlake-tick-{name}".lower().replace("_", "-").replace(".", "-"),
                       "namespace": namespace}
    doc["spec"]["schedule"] = cron
    job = doc["spec"]["jobTemplate"]
    job["entrypoint"] = " ".join(_tick_command(name, state))
    _fill_pods(job["rayClusterSpec"], image, secret, gpus, workers)
    return doc


def cronjob_submitting(name: str, cron: str, state: str, image: str, namespace: str, secret: str, gpus: int,
                       workers: int, ray_cluster: str = "actlake") -> dict:
    """A Kubernetes CronJob submitting the tick to the running RayCluster ``ray_cluster`` (``ray job submit``)."""
    doc = copy.deepcopy(template("kuberay/cronjob-tick.yaml"))
    doc["metadata"] = {"name": f"actlake-tick-{name}".lower().replace("_", "-").replace(".", "-"),
                       "namespace": namespace}
    doc["spec"]["schedule"] = cron
    pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["containers"][0]["image"] = image
    pod["containers"][0]["command"] = ["ray", "job", "submit", "--address", f"http://{ray_cluster}-head-svc:8265",
                                       "--", *_tick_command(name, state)]
    return doc
