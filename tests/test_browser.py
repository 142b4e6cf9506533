"""The built site, as a reader's browser shows it.

The book is built at the smoke profile into a copy of the sources (the real ``_build``
and ``book/claims`` stay untouched), then opened in headless Chromium: on every page of
the table of contents, the scorecard and every chapter included, the page loads with its
title, every image is decoded (non-zero natural size), every chapter has as many figures
as its executed notebook, and a screenshot is not blank.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and
selenium (the ``test`` extra). Where they are missing the test skips and says why,
except in CI (``CI=true``), where a missing browser is a failure.
"""

import io
import os
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from vqstudy import runner

CHROMIUM = os.environ.get("VQSTUDY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VQSTUDY_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1400"]

pytestmark = pytest.mark.slow


def missing_browser() -> str:
    """Why the browser test cannot run here, or ''."""
    why = [f"{path} not found" for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        why.append("selenium is not installed (pip install -e '.[test]')")
    if why:
        return "; ".join(why) + " (Debian: apt-get install -y chromium chromium-driver)"
    return ""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why = missing_browser()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(f"no headless browser: {why}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(browser, smoke_book):
    """The whole book built at smoke, in a copy of the sources, with its own run cache:
    the session's one build (tests/conftest.py)."""
    assert smoke_book.code == 0, "the smoke book did not build (see the log of the first test that used it)"
    return smoke_book.root


def figures_in(executed: Path) -> int:
    """Images a chapter must show: image outputs of cells the book does not remove."""
    nb = nbformat.read(executed, as_version=4)
    hidden = {"remove-cell", "remove-output"}
    return sum(1 for c in nb.cells if c.cell_type == "code" and not hidden & set(c.metadata.get("tags", []))
               for o in c.get("outputs", []) if "image/png" in o.get("data", {}))


DECODE_IMAGES = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.querySelectorAll('article img, main img'));
Promise.all(images.map(img => { img.loading = 'eager'; return img.decode().then(() => null, () => null); }))
  .then(() => done(images.map(img => [img.getAttribute('src'), img.naturalWidth, img.naturalHeight])));
"""


def not_blank(png: bytes) -> bool:
    """A screenshot with text and figures on it, not one flat colour."""
    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(png)).convert("L")
    histogram = image.histogram()
    dominant = max(histogram) / sum(histogram)
    return ImageStat.Stat(image).stddev[0] > 10 and dominant < 0.97


def pages(root: Path) -> list[str]:
    """Every page of the book: the root, then the table of contents in order."""
    return [yaml.safe_load((root / "_toc.yml").read_text())["root"]] + runner.toc_files(root)


def test_every_page_loads_with_its_figures_decoded_and_is_not_blank(browser, site, tmp_path):
    html = site / "_build" / "html"
    toc = pages(site)
    assert toc.index("book/claims/scorecard") == 1, "the scorecard is the first page after the introduction"
    chapters = set(runner.executed_notebooks(site))
    assert chapters
    problems = []
    for page in toc:
        path = html / f"{page}.html"
        if not path.exists():
            problems.append(f"{page}: {path} was not built")
            continue
        browser.get(path.as_uri())
        title = browser.execute_script("const h = document.querySelector('article h1, main h1'); "
                                       "return h ? h.textContent.trim() : '';")
        if not title:
            problems.append(f"{page}: no title (h1) on the page")
        images = browser.execute_async_script(DECODE_IMAGES)
        broken = [src for src, width, height in images if not (width > 0 and height > 0)]
        if broken:
            problems.append(f"{page}: images not decoded: {broken}")
        name = page.rsplit("/", 1)[-1]
        if name in chapters:
            expected = figures_in(site / runner.EXECUTED_DIR / f"{name}.ipynb")
            shown = sum(1 for src, _, _ in images if "_images/" in (src or ""))
            if expected == 0 or shown < expected:
                problems.append(f"{page}: {shown} figures shown, its notebook has {expected}")
            if "Provenance." not in browser.find_element("tag name", "body").text:
                problems.append(f"{page}: no provenance block")
        png = browser.get_screenshot_as_png()
        (tmp_path / f"{name}.png").write_bytes(png)
        if not not_blank(png):
            problems.append(f"{page}: the screenshot is blank ({tmp_path / f'{name}.png'})")
    scorecard = (site / runner.EXECUTED_DIR / "scorecard.md").read_text()
    for name in chapters:
        assert f"{{doc}}`{name}`" in scorecard, f"the scorecard has no row linking to {name}"
    assert not problems, "\n".join(problems)
