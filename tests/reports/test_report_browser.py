"""The report in headless Chromium: full-page PNG, no broken images, and a broken image
is found when there is one. Skipped where no Chromium is installed."""

from __future__ import annotations

import base64
import io

import matplotlib.image as mpimg
import numpy as np
import pytest
from test_report_html import img_sources, make_report_run

from brainmaps.exceptions import ConfigError
from brainmaps.reports import browser, build_report
from brainmaps.reports.figures import figure_to_png


def _require_chromium() -> None:
    try:
        browser.find_chromium()
    except ConfigError as err:
        pytest.skip(f"no Chromium to load the report in: {err}")


def _png_pixels(path) -> np.ndarray:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return mpimg.imread(io.BytesIO(data), format="png")


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    _require_chromium()
    run_dir = make_report_run(tiny_run, tmp_path_factory.mktemp("browser"))
    return build_report(run_dir)


def test_report_has_no_broken_images(report):
    result = browser.check_report_in_browser(report)
    n_images = len(img_sources(report.read_text()))
    assert result["n_images"] == n_images == 12
    assert result["n_broken"] == 0 and result["ok"]
    assert result["height"] > 2000


def test_report_renders_to_a_full_page_png(report, tmp_path):
    out = browser.render_html_to_png(report, tmp_path / "shot" / "report.png", width=1000)
    assert out.stat().st_size > 50_000
    pixels = _png_pixels(out)
    assert pixels.shape[1] == 1000 and pixels.shape[0] > 2000  # the whole page, not a window
    assert pixels[..., :3].std() > 0.05  # not uniformly white
    assert [p.name for p in out.parent.iterdir()] == ["report.png"]


def test_a_broken_image_is_reported(tmp_path):
    _require_chromium()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    good = base64.b64encode(figure_to_png(fig)).decode()
    page = tmp_path / "page.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>t</title></head><body>"
        f'<img src="data:image/png;base64,{good}"><img src="missing.png">'
        '<img src="data:image/png;base64,bm90IGEgcG5n"></body></html>'
    )
    result = browser.check_report_in_browser(page)
    assert result["n_images"] == 3 and result["n_broken"] == 2 and not result["ok"]
    assert result["broken"][0].endswith("/missing.png")
    assert result["broken"][0].startswith(tmp_path.as_uri())  # resolved next to the page


def test_tall_pages_are_captured_in_tiles(tmp_path, monkeypatch):
    _require_chromium()
    page = tmp_path / "tall.html"
    page.write_text(
        '<!DOCTYPE html><html><head></head><body style="margin:0">'
        '<div style="height:600px;background:#ff0000"></div>'
        '<div style="height:600px;background:#0000ff"></div></body></html>'
    )
    monkeypatch.setattr(browser, "MAX_TILE", 500)
    pixels = _png_pixels(browser.render_html_to_png(page, tmp_path / "tall.png", width=300))
    assert pixels.shape[:2] == (1200, 300)
    for y, rgb in [(10, (1, 0, 0)), (550, (1, 0, 0)), (650, (0, 0, 1)), (1190, (0, 0, 1))]:
        assert pixels[y, 150, :3] == pytest.approx(rgb, abs=0.02), y


def test_missing_chromium_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(browser.ENV_VAR, str(tmp_path / "no-such-browser"))
    with pytest.raises(ConfigError, match="BRAINMAPS_CHROMIUM"):
        browser.find_chromium()
    monkeypatch.delenv(browser.ENV_VAR)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="no Chromium found"):
        browser.find_chromium()
    with pytest.raises(ConfigError, match="does not exist"):
        browser.check_report_in_browser(tmp_path / "absent.html")
