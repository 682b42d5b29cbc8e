"""Submitting extraction jobs to a running Ray cluster through Ray's job-submission API."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from cluster.commands import JobsConfig, SubmitConfig
from cluster.jobfiles import ENV_PREFIX, read_job_file_text
from shards.errors import ActlakeError
from shards.retry import RetryPolicy, retry

JOB_ENV = "ACTLAKE_JOB_YAML"
log = logging.getLogger("actlake.submit")


class JobError(ActlakeError, RuntimeError):
    """A job could not be submitted or found."""


class AgentNotReady(ConnectionError):
    """A freshly started head's job agent is not up yet (Ray says so only in a RuntimeError's text)."""


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection problems of any kind
        raise JobError(
            f"cannot reach the Ray job server at {address}: {type(exc).__name__}: {exc}. Give the head's dashboard "
            "address (http://HEAD:8265); with token authentication set RAY_AUTH_MODE=token."
        ) from None


def submit(job_file: str, address: str, command: str = "extract", extra_args: list[str] | None = None,
           pip: list[str] | None = None, wait: bool = False) -> str:
    """Submit ``actlake <command> --config job.yaml`` to the cluster at ``address``; return the job id.

    The job file's text travels in the job's environment (``ACTLAKE_JOB_YAML``),
    not as an uploaded working directory: nothing has to be fetched from the
    cluster's object store by every node. The cluster's Python must have actlake
    installed (or pass ``pip=[...]`` for Ray to install). Credentials are not
    copied: the job uses the cluster's own environment.
    """
    path = Path(job_file)
    if not path.is_file():
        raise JobError(f"job file {job_file!r} not found (looked at {path.resolve()})")
    runtime_env: dict = {"env_vars": {JOB_ENV: shippable_job_text(path.read_text())}}
    if pip:
        runtime_env["pip"] = pip
    entrypoint = " ".join(["python -m cluster.cli", command, f"--config {ENV_PREFIX}{JOB_ENV}", *(extra_args or [])])
    client = _client(address)

    def attempt() -> str:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as exc:
            if "No available agent" in str(exc):
                raise AgentNotReady(str(exc)) from None
            raise JobError(f"job submission to {address} failed: {exc}") from None

    try:
        job_id = retry(attempt, retry_on=(AgentNotReady,), policy=RetryPolicy(attempts=29, backoff=2, max_backoff=2))
    except AgentNotReady as exc:
        raise JobError(f"job submission to {address} failed: {exc}") from None
    if wait:
        wait_for(address, job_id)
    return job_id


def shippable_job_text(text: str) -> str:
    """The job file as it may travel: Ray writes a job's runtime environment into its agent's log, so
    credentials (``KEY:SECRET@`` in URIs, secret-looking options) are taken out, with a warning; the job
    then uses the cluster's own credentials (its AWS_* environment or instance role)."""
    import yaml

    from shards.secrets import redact

    data = read_job_file_text(text)
    clean = _drop_secrets(redact(data))
    if clean != data:
        log.warning("credentials in the job file are not sent to the cluster (Ray logs a job's environment); "
                    "the job uses the cluster's own credentials")
    return yaml.safe_dump(clean, sort_keys=False)


def _masked(value) -> bool:
    """A value ``redact`` masked: ``***``, ``KEY=***``, or a JSON value holding ``"***"`` (``client_kwargs={…}``);
    not a URI whose secret query parameter was masked (``--data https://host/x?token=***``): the job still needs
    its input, and the server refuses it without the token (dropped, the option's default would be read)."""
    if not isinstance(value, str) or re.match(r"[a-zA-Z][\w+.-]*://", value):
        return False
    return value == "***" or value.endswith("=***") or '"***"' in value


def _drop_secrets(obj):
    """``redact``'s output without the redacted entries: a '***' would be sent as if it were the secret."""
    if isinstance(obj, dict):
        return {k: _drop_secrets(v) for k, v in obj.items() if not _masked(v)}
    if isinstance(obj, list):
        return [_drop_secrets(v) for v in obj if not _masked(v)]
    return obj


def wait_for(address: str, job_id: str, timeout: float = 3600, poll: float = 1.0) -> str:
    client = _client(address)
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = str(client.get_job_status(job_id))
        if status.split(".")[-1] in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status.split(".")[-1]
        time.sleep(poll)
    raise JobError(f"job {job_id} still running after {timeout}s")


def status(address: str, job_id: str) -> str:
    return str(_client(address).get_job_status(job_id)).split(".")[-1]


def logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    return bool(_client(address).stop_job(job_id))


def default_address() -> str:
    return os.environ.get("RAY_DASHBOARD_ADDRESS") or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"


def cmd_submit(cfg: SubmitConfig) -> int:
    """``actlake submit``: the job file's command on a cluster; with --wait its logs and final state."""
    from cluster.cli import COMMANDS

    if cfg.command not in COMMANDS or not COMMANDS[cfg.command].job_file:
        raise JobError(f"--command {cfg.command!r}: a job runs one of {[n for n, c in COMMANDS.items() if c.job_file]}")
    address = cfg.address or default_address()
    job_id = submit(cfg.job_file, address, cfg.command)
    print(job_id)
    if not cfg.wait:
        return 0
    state = wait_for(address, job_id)
    print(logs(address, job_id))
    print(f"job {job_id}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def cmd_jobs(cfg: JobsConfig) -> int:
    """``actlake jobs status|logs|stop ID``."""
    address = cfg.address or default_address()
    actions = {"status": lambda: status(address, cfg.job_id), "logs": lambda: logs(address, cfg.job_id),
               "stop": lambda: "stopped" if stop(address, cfg.job_id) else "not running"}
    print(actions[cfg.action]())
    return 0
