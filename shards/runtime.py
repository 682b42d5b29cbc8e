"""Starting or joining Ray, one way for every command (extraction, SAE training, analyses)."""

from __future__ import annotations

import logging
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
        _quiet_auth_banner()
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


class _NotTheBanner(logging.Filter):
    """Drops Ray's "Token authentication is enabled for this Ray cluster" notice, printed on every command that
    starts a local Ray (the default it announces is the secure one); its warnings of auth *disabled* still show.
    (Setting RAY_AUTH_MODE=token ourselves would do it, but Ray reads its config once at import.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Token authentication is enabled for this Ray cluster")


def _quiet_auth_banner() -> None:
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _NotTheBanner) for f in logger.filters):
        logger.addFilter(_NotTheBanner())
