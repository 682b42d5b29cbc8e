"""Starting or joining Ray, one way for every command (extraction, SAE training, analyses)."""

from __future__ import annotations

import os


def connect_ray(address: str | None = None):
    """Ray, initialised: already running in this process, the cluster at ``address``, the cluster of a
    submitted job (``RAY_ADDRESS``), or else a local Ray whose listeners bind loopback only."""
    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local listeners on loopback only
    if address:
        ray.init(address=address, log_to_driver=False)
    elif os.environ.get("RAY_ADDRESS"):  # inside a submitted job: join its cluster
        ray.init(log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray
