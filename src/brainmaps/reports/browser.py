"""Load an HTML report in headless Chromium: screenshot it, and find broken images.

Both functions work on an instrumented copy of the page in a temporary folder: a
``<base href>`` keeps the original folder for relative links, and for the check a tiny
script, run on the ``load`` event, writes the number of images, the broken ones
(``naturalWidth == 0``) and the page height into a hidden element that
``--dump-dom`` prints. The original file is never modified. A full-page screenshot
needs a window as tall as the page: the height is measured first, and a page taller
than :data:`MAX_TILE` pixels is captured in tiles that are stacked.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from brainmaps.exceptions import BrainmapsError, ConfigError
from brainmaps.utils import atomic_path

__all__ = ["MAX_TILE", "check_report_in_browser", "find_chromium", "render_html_to_png"]

#: Environment variable naming the Chromium / Chrome binary to use.
ENV_VAR = "BRAINMAPS_CHROMIUM"
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Tallest window captured in one screenshot (pixels); taller pages are tiled.
MAX_TILE = 8000
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--run-all-compositor-stages-before-draw",
    "--virtual-time-budget=10000",
)
_CHECK_ID = "__brainmaps_check"
_CHECK_SCRIPT = f"""<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images), broken = [];
  images.forEach(function (img) {{
    if (!img.complete || img.naturalWidth === 0) broken.push(img.src.slice(0, 120));
  }});
  var out = document.createElement("pre");
  out.id = "{_CHECK_ID}"; out.style.display = "none";
  out.textContent = JSON.stringify({{n_images: images.length, broken: broken,
    height: Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)}});
  document.body.appendChild(out);
}});
</script>"""


def find_chromium() -> str:
    """The Chromium binary: ``$BRAINMAPS_CHROMIUM``, else the first on ``PATH``.

    Returns
    -------
    str
        Path of the executable.

    Raises
    ------
    ConfigError
        If ``$BRAINMAPS_CHROMIUM`` names no executable, or none of chromium,
        chromium-browser, google-chrome is installed.
    """
    named = os.environ.get(ENV_VAR)
    if named:
        found = shutil.which(named)
        if not found:
            raise ConfigError(
                f"{ENV_VAR}={named!r} is not an executable; point it at a Chromium or "
                "Chrome binary, or unset it to search PATH."
            )
        return found
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(
        f"no Chromium found on PATH (looked for {', '.join(_NAMES)}); install one "
        f"(e.g. 'apt-get install chromium') or set {ENV_VAR} to its path. The report "
        "itself does not need it."
    )


def _instrument(source: Path, folder: Path, *, check: bool, shift: int = 0) -> Path:
    """Copy ``source`` into ``folder`` with a base href, the check script or a shift."""
    text = source.read_text(encoding="utf-8", errors="replace")
    base = f'<base href="{html_lib.escape(source.resolve().parent.as_uri())}/">'
    if shift:
        base += f"<style>html {{ transform: translateY(-{int(shift)}px); }}</style>"
    head = re.search(r"<head[^>]*>", text, flags=re.IGNORECASE)
    text = text[: head.end()] + base + text[head.end() :] if head else base + text
    if check:
        end = text.lower().rfind("</body>")
        text = text[:end] + _CHECK_SCRIPT + text[end:] if end >= 0 else text + _CHECK_SCRIPT
    page = folder / f"page-{shift}.html"
    page.write_text(text, encoding="utf-8")
    return page


def _chromium(args: list[str], timeout: float) -> str:
    """Run Chromium with the safe headless flags and a fresh profile; return stdout."""
    binary = find_chromium()
    with tempfile.TemporaryDirectory(prefix="brainmaps-chromium-") as profile:
        command = [binary, *_FLAGS, f"--user-data-dir={profile}", *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrainmapsError(
                f"{binary} did not finish within {timeout} s; raise timeout= or check "
                "that it starts (run it with --headless --dump-dom on a small page)."
            ) from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise BrainmapsError(f"{binary} failed (exit {done.returncode}): {tail}")
    return done.stdout


def _check_html(html_path: Path) -> Path:
    path = Path(html_path)
    if not path.is_file():
        raise ConfigError(f"html_path: {path} does not exist; build the report first.")
    return path


def check_report_in_browser(
    html_path: str | os.PathLike, width: int = 1200, timeout: float = 120
) -> dict:
    """Load a page in headless Chromium and report its images that failed to load.

    Parameters
    ----------
    html_path : str or os.PathLike
        The HTML file (e.g. ``<run>/report.html``).
    width : int
        Window width in pixels (the page height depends on it).
    timeout : float
        Seconds before Chromium is given up.

    Returns
    -------
    dict
        ``n_images`` (int), ``n_broken`` (int), ``broken`` (list of the first 120
        characters of each broken image's ``src``), ``height`` (page height in pixels at
        this width) and ``ok`` (True when no image is broken).

    Raises
    ------
    ConfigError
        If the file or Chromium is missing.
    BrainmapsError
        If Chromium fails or the page never finishes loading.
    """
    path = _check_html(html_path)
    with tempfile.TemporaryDirectory(prefix="brainmaps-page-") as folder:
        page = _instrument(path, Path(folder), check=True)
        dom = _chromium([f"--window-size={int(width)},900", "--dump-dom", page.as_uri()], timeout)
    found = re.search(rf'<pre id="{_CHECK_ID}"[^>]*>(.*?)</pre>', dom, flags=re.DOTALL)
    if not found:
        raise BrainmapsError(
            f"{path} did not finish loading in Chromium within its time budget (no load "
            "event); check the page for scripts or resources that never load."
        )
    result = json.loads(html_lib.unescape(found.group(1)))
    broken = [str(s) for s in result["broken"]]
    return {
        "n_images": int(result["n_images"]),
        "n_broken": len(broken),
        "broken": broken,
        "height": int(result["height"]),
        "ok": not broken,
    }


def _stack(tiles: list[Path], out: Path) -> None:
    from PIL import Image

    images = [Image.open(t).convert("RGB") for t in tiles]
    canvas = Image.new("RGB", (images[0].width, sum(i.height for i in images)), "white")
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height
    canvas.save(out, format="PNG")


def render_html_to_png(
    html_path: str | os.PathLike,
    png_path: str | os.PathLike,
    width: int = 1200,
    height: int | None = None,
    timeout: float = 180,
) -> Path:
    """Screenshot a page in headless Chromium, full length by default.

    Parameters
    ----------
    html_path : str or os.PathLike
        The HTML file.
    png_path : str or os.PathLike
        Where to write the PNG (atomically).
    width : int
        Window width in pixels.
    height : int, optional
        Height of the capture; default: the page's full height, measured first. Pages
        taller than :data:`MAX_TILE` are captured in tiles and stacked.
    timeout : float
        Seconds allowed per Chromium call.

    Returns
    -------
    pathlib.Path
        ``png_path``.

    Raises
    ------
    ConfigError
        If the file or Chromium is missing.
    BrainmapsError
        If Chromium fails.
    """
    path = _check_html(html_path)
    if height is None:
        height = check_report_in_browser(path, width=width, timeout=timeout)["height"]
    height = max(int(height), 1)
    with tempfile.TemporaryDirectory(prefix="brainmaps-shot-") as folder:
        tiles = []
        for top in range(0, height, MAX_TILE):
            page = _instrument(path, Path(folder), check=False, shift=top)
            tile = Path(folder) / f"tile-{top}.png"
            size = f"--window-size={int(width)},{min(MAX_TILE, height - top)}"
            _chromium([size, f"--screenshot={tile}", page.as_uri()], timeout)
            tiles.append(tile)
        with atomic_path(png_path, suffix=".png") as tmp:
            _stack(tiles, tmp)
    return Path(png_path)
