"""Real web servers on loopback for the tests of datasets shared by URL: Debian's ``nginx`` over HTTPS (a
self-signed certificate the client is told to trust through ``SSL_CERT_FILE``, as a user trusts a private CA),
installed when missing as the README's test command promises; and Python's ``http.server``, which answers no
range requests (the server a reader must refuse with a clear error)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def install_nginx() -> str:
    """The path of ``nginx``; ``apt-get install`` it (nginx-light) first when missing."""
    path = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if not path:
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx-light"]
        if subprocess.run(install, capture_output=True, timeout=900).returncode != 0:  # stale package lists
            subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=900)
            subprocess.run(install, check=True, capture_output=True, timeout=900)
        path = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(path).exists(), "nginx could not be installed"
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on {port}")


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, valid for two days."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@contextmanager
def nginx_https(root: Path, work: Path, users: dict[str, str] | None = None,
                cert_and_key: tuple[Path, Path] | None = None):
    """Serve ``root`` read-only over HTTPS on a free loopback port; yields (base URL, certificate path, key path).
    ``users``: basic-auth logins required for every file; ``cert_and_key``: a certificate to reuse (default: a
    new self-signed one). Stopped on exit."""
    nginx = install_nginx()
    work.mkdir(parents=True, exist_ok=True)
    cert, key = cert_and_key or self_signed_cert(work)
    port = free_port()
    auth = ""
    if users:
        lines = []
        for user, password in users.items():
            hashed = subprocess.run(["openssl", "passwd", "-apr1", password], check=True, capture_output=True,
                                    text=True).stdout.strip()
            lines.append(f"{user}:{hashed}")
        (work / "htpasswd").write_text("\n".join(lines) + "\n")
        auth = f'auth_basic "actlake"; auth_basic_user_file {work}/htpasswd;'
    temp = " ".join(f"{k}_temp_path {work}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (work / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}  # the workers read the test's private tmp folders
daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log {work}/access.log; {temp}
  types {{ application/json json; }} default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
    root {root}; {auth}
  }}
}}
""")
    log = work / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-e", str(work / "error.log")],
                                stdout=err, stderr=err, start_new_session=True)
    try:
        _wait_for(port, proc, log)
        yield f"https://127.0.0.1:{port}", cert, key
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def python_http_server(root: Path):
    """Python's ``http.server`` on ``root`` (no range requests); yields its base URL. Stopped on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                             str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(port, proc, root / "no-log")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
