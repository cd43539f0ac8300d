"""Headless-Chromium checks of static pages, with no webdriver and no network.

`inspect_page` writes a copy of the page beside it (so relative links resolve exactly as for the
original) with a small script appended that, once the window's load event has fired (every image
loaded or failed), writes what it found as JSON into the DOM. Chromium prints the DOM with
`--dump-dom` and exits; the copy is removed. Host resolution is mapped to nothing, so a page that
needed the network would show broken images instead of quietly fetching them.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from typing import Any

logger = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "headless_shell")
_RESULT_ID = "__browser_probe_result"
_PROBE_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {
      src: img.getAttribute("src"),
      resolved: img.currentSrc || img.src,
      loaded: img.complete && img.naturalWidth > 0,
      naturalWidth: img.naturalWidth
    };
  });
  var cells = Array.prototype.map.call(
    document.querySelectorAll("[data-metric]"),
    function (el) { return [el.getAttribute("data-metric"), el.textContent.trim()]; }
  );
  var out = document.createElement("pre");
  out.id = "RESULT_ID";
  out.textContent = JSON.stringify({images: images, metric_cells: cells});
  document.body.appendChild(out);
});
</script>
""".replace("RESULT_ID", _RESULT_ID)
_RESULT_PATTERN = re.compile(rf'<pre id="{_RESULT_ID}">(.*?)</pre>', re.DOTALL)


def find_chromium() -> str | None:
    """Path of a Chromium binary ($CHROMIUM, else the first of CHROMIUM_NAMES on PATH) or None."""
    override = os.environ.get("CHROMIUM")
    if override:
        return shutil.which(override) or (override if os.access(override, os.X_OK) else None)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _base_flags(user_data_dir: str) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",  # root in CI, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: nothing from the network
        f"--user-data-dir={user_data_dir}",
    ]


@dataclasses.dataclass(frozen=True)
class ChromiumRun:
    """How one Chromium run ended: exit code, output, and helpers found still alive after it."""

    returncode: int
    stdout: str
    stderr: str
    leftover_pids: tuple[int, ...]


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group pgid that are alive (zombies, already dead, are not counted)."""
    alive = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process exited while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def run_chromium(args: list[str], timeout: float = 90.0, grace: float = 5.0) -> ChromiumRun:
    """Run headless Chromium with the no-network flags plus args; leaves no process behind.

    Chromium forks helpers (zygote, renderer, utility) into its own process group here. After the
    browser exits, helpers get `grace` seconds to exit too; any still alive are recorded in
    `leftover_pids` and killed, so a hung or crashed browser never outlives the call.
    """
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError(f"no Chromium binary found (tried {', '.join(CHROMIUM_NAMES)})")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [binary, *_base_flags(profile), *args]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, id = its pid
        )
        leftover: list[int] = []
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            deadline = time.monotonic() + grace
            while (leftover := live_group_members(process.pid)) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # the whole group has exited: the normal case
            if process.returncode is None:  # timed out: reap it so no zombie of ours remains
                process.communicate()
    if leftover:
        logger.warning("Chromium left processes %s behind; killed them", leftover)
    return ChromiumRun(
        returncode=process.returncode,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        leftover_pids=tuple(leftover),
    )


def inspect_page(html_path: str | os.PathLike, timeout: float = 90.0) -> dict[str, Any]:
    """Open a local page and report its images and data-metric cells after the load event.

    Returns {"images": [{"src", "resolved", "loaded", "naturalWidth"}], "metrics": {name: text},
    "metric_cells": [[name, text], ...] (every cell, in page order),
    "exit_code": Chromium's exit code, "leftover_pids": helpers that outlived it (then killed)}.
    """
    page = pathlib.Path(html_path).resolve()
    text = page.read_text(encoding="utf-8")
    marker = text.rfind("</body>")
    probed = (
        (text[:marker] + _PROBE_SCRIPT + text[marker:]) if marker >= 0 else text + _PROBE_SCRIPT
    )
    probe = page.with_name(f".probe-{uuid.uuid4().hex}-{page.name}")
    probe.write_text(probed, encoding="utf-8")
    try:
        result = run_chromium(
            ["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], timeout=timeout
        )
    finally:
        probe.unlink(missing_ok=True)
    found = _RESULT_PATTERN.search(result.stdout)
    if found is None:
        raise RuntimeError(
            f"Chromium (exit {result.returncode}) printed no probe result for {page}; "
            f"stderr tail: {result.stderr[-2000:]}"
        )
    data = json.loads(html.unescape(found.group(1)))
    cells = [tuple(cell) for cell in data["metric_cells"]]
    return {
        "exit_code": result.returncode,
        "leftover_pids": list(result.leftover_pids),
        "images": data["images"],
        "metrics": dict(cells),
        "metric_cells": [list(cell) for cell in cells],
    }


def broken_images(report: dict[str, Any]) -> list[str]:
    """The src of every image inspect_page saw fail to load."""
    return [image["src"] for image in report["images"] if not image["loaded"]]


def screenshot(
    html_path: str | os.PathLike, png_path: str | os.PathLike, width: int = 1280, height: int = 2000
) -> ChromiumRun:
    """Save a PNG screenshot of a local page at the given window size."""
    page = pathlib.Path(html_path).resolve()
    return run_chromium(
        [
            f"--screenshot={pathlib.Path(png_path).resolve()}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            page.as_uri(),
        ]
    )
