"""A real headless browser for the tests of built pages: Debian's ``chromium``, installed when missing (as the
README's test command promises to set everything up)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"  #: screenshots kept for people to look at


def install_chromium() -> str:
    """The path of ``chromium``; ``apt-get install`` it first when missing (refreshing stale package lists)."""
    path = shutil.which("chromium")
    if path is None:
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if subprocess.run(install, capture_output=True, timeout=900).returncode != 0:  # stale package lists
            subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=900)
            subprocess.run(install, check=True, capture_output=True, timeout=900)
        path = shutil.which("chromium")
    assert path, "chromium could not be installed"
    return path


def render(chromium: str, url: str, screenshot: Path | None = None, height: int = 1400) -> tuple[str, str]:
    """(the DOM after the page's scripts ran, the browser's log: console messages and errors)."""
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*base, f"--screenshot={screenshot}", f"--window-size=1200,{height}", url],
                       capture_output=True, timeout=120, check=True)
    p = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    return p.stdout, p.stderr
