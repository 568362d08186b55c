"""Open an HTML file in headless Chromium (Debian's ``chromium`` package, installed here
when missing; never a project dependency) and report every image's natural size."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

_PROBE = """<script>
window.addEventListener('load', () => {
  const sizes = Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight]);
  const out = document.createElement('pre');
  out.id = 'simfarm-probe';
  out.textContent = JSON.stringify(sizes);
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    """The chromium binary; installs Debian's package when missing, else skips the test."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be installed here (needs root + apt)")
    install = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = shutil.which("chromium")
    if install.returncode != 0 or not found:
        pytest.skip(f"`apt-get install chromium` failed: {install.stderr[-500:]}")
    return found


def _base_args(binary: str, profile: Path) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--run-all-compositor-stages-before-draw",
    ]


def image_sizes(html: Path, workdir: Path) -> list[tuple[str, int, int]]:
    """(alt, naturalWidth, naturalHeight) of every <img> once the page has loaded.

    A copy of the page gets a probe script (the report itself has none); Chromium runs it
    and ``--dump-dom`` prints the result.
    """
    binary = chromium()
    probe = workdir / "probe.html"
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"))
    result = subprocess.run(
        [*_base_args(binary, workdir / "profile"), "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r'<pre id="simfarm-probe">(.*?)</pre>', result.stdout, re.S)
    assert match, f"chromium printed no probe result: {result.stderr[-1000:]}"
    return [tuple(entry) for entry in json.loads(match.group(1))]  # type: ignore[misc]


def screenshot(html: Path, target: Path, workdir: Path) -> Path:
    binary = chromium()
    subprocess.run(
        [
            *_base_args(binary, workdir / "profile-shot"),
            "--window-size=1200,2400",
            f"--screenshot={target}",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return target
