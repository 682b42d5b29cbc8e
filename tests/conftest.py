"""Fixtures with real parts: a real S3 server (moto) on loopback, a real local Ray."""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Idle OpenMP threads (torch's intra-op pool, MKL's) sleep instead of spinning for a while. On CI's two cores the
# spinning threads of one process starve every other one (Ray's workers, the S3 server, the second pytest worker):
# a small SAE's training ran 3-6x slower. Only how an idle thread waits changes, not how work is split between
# threads, so every number computed is the same. Read when torch is first imported, which happens after this.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: Test files by their time (seconds, on CI run alone; the last four estimated from a run on two workers): under
#: pytest-xdist (`make test` runs two workers, `--dist loadgroup --no-loadscope-reorder`) these start first, then
#: the other integration files, then the unit files, so that no long file is left for the end while the other
#: worker has nothing to do. A file missing here only starts later; nothing else depends on this list.
SLOW_FILES = {
    "tests/integration/test_quickstart.py": 400,
    "tests/integration/test_smollm2.py": 150,
    "tests/unit/analysis/test_sae_synthetic_bench.py": 246,
    "tests/integration/test_probe_ray.py": 144,
    "tests/integration/test_causal_probing.py": 130,
    "tests/integration/test_sae_train.py": 123,
    "tests/integration/test_sae_evaluate.py": 102,
    "tests/integration/test_schedule_ray.py": 100,
    "tests/integration/test_model_in_loop_ray.py": 93,
    "tests/integration/test_extract_ray.py": 86,
    "tests/integration/test_cluster_submit.py": 72,
    "tests/integration/test_copy.py": 67,
    "tests/integration/test_zoo.py": 63,
    "tests/integration/test_align_ray.py": 60,
    "tests/unit/analysis/test_sae_dictionaries.py": 60,
    "tests/unit/analysis/test_round3_results.py": 50,
    "tests/unit/shards/test_format_v3.py": 50,
    "tests/unit/interp/test_interp.py": 50,
    "tests/integration/test_quiet_output.py": 50,
}


#: what tests, and the commands they run, make directly in /tmp (``tempfile.mkdtemp`` names: a prefix and 8 random
#: characters): the short RAY_TMPDIRs of tests/ray_tmp.py (and "rq-" of older tests), `cluster up`'s Ray folder,
#: Ray Train's run folder of `sae train --workers N`, the SAELens export's cache; and the die-once marker file
LEFT_BEHIND = re.compile(r"(?:rt|rq-|alc|actlake-raytrain-|actlake-saelens-)[a-z0-9_]{8}"
                         r"|actlake-test-die-while-loading")
_TMP_BEFORE = pytest.StashKey[set]()


def _tmp_entries() -> set[str]:
    """The entries of /tmp that LEFT_BEHIND names."""
    try:
        return {name for name in os.listdir("/tmp") if LEFT_BEHIND.fullmatch(name)}
    except OSError:
        return set()


def pytest_sessionstart(session):
    session.config.stash[_TMP_BEFORE] = _tmp_entries()


def pytest_sessionfinish(session, exitstatus):
    """A run that leaves one of LEFT_BEHIND's folders in /tmp fails, naming it. Checked once, by the process that
    started the run (under pytest-xdist the controller, once every worker is done), and only for folders that
    appeared during the run and that no live process names: another run on the same machine may still use its own."""
    if os.environ.get("PYTEST_XDIST_WORKER") or exitstatus == pytest.ExitCode.INTERRUPTED:
        return
    from cluster.local import cluster_processes

    before = session.config.stash.get(_TMP_BEFORE, set())
    left = sorted(name for name in _tmp_entries() - before if not cluster_processes(f"/tmp/{name}"))
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"FAILED: the tests left these behind in /tmp: {left}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which appends the group to each test's id
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist: each test file is one unit of work (its module fixtures are built once, its tests run
    in order in one worker, as when run alone), unless a test names its own ``xdist_group``; the slow files first.
    Every worker collects the same files and sorts them the same way, as xdist requires."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))

    def weight(item) -> tuple[int, bool]:
        path = item.nodeid.split("::", 1)[0]
        return -SLOW_FILES.get(path, 0), not path.startswith("tests/integration/")

    items.sort(key=weight)  # stable: the order of the files and of the tests within a file is kept


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 and a free port; AWS env points every client at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket; yields its s3:// URI."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    yield f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory, s3_endpoint):
    """A real local Ray (loopback only), shut down at the end of the session.

    Started after the S3 server so that its workers inherit the AWS_* environment, as on a real cluster.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    tmp = tmp_path_factory.mktemp("ray")
    os.environ["RAY_TMPDIR"] = str(tmp)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 << 20,
             _temp_dir=str(tmp), log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
    from tests.ray_tmp import remove_ray_tmpdir

    remove_ray_tmpdir(str(tmp))  # Ray's session folders (logs, sockets: tens of MB), once its processes are gone


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless chromium, from Debian's package (installed now when missing, as the test set-up promises)."""
    import fcntl

    from tests.browser import install_chromium

    # one apt-get at a time when pytest-xdist's workers both find it missing (dpkg takes a lock of its own)
    with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "actlake-tests-chromium.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return install_chromium()
