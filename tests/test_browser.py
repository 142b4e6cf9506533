"""The built site, as a reader's browser shows it.

The session's smoke book (``smoke_book`` in ``conftest.py``: the whole book built once at
the smoke profile, in a copy of the sources) is opened in headless Chromium at a desktop
width (1400 px) and a phone width (390 px). On every page of the table of contents:

- the page loads with its title, and a screenshot is not blank;
- every image is decoded (non-zero natural size), and every chapter shows as many figures
  as its executed notebook, and its provenance;
- every figure of a chapter, and the introduction's lead figure, is numbered ("Fig. 3"),
  with a caption and alt text (a ``{glue:figure}`` or ``{figure}``);
- nothing is wider than the content column unless it scrolls inside its own box, and the
  page itself never scrolls sideways; at 1400 px a result table fits without scrolling;
- no raw TeX is visible and no MathJax is loaded (a page must read complete offline);
- the scorecard shows a coloured badge for every verdict, and the introduction opens with
  the summary's badges and the lead figure.

Screenshots of the scorecard, C1 and C3 at 1400 px are left in ``_build/screenshots/`` of
the built copy, for a person to look at.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and
selenium (the ``test`` extra). Where they are missing the test skips and says why,
except in CI (``CI=true``), where a missing browser is a failure.
"""

import io
import os
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from vqstudy import runner

CHROMIUM = os.environ.get("VQSTUDY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VQSTUDY_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1000"]
WIDTHS = (1400, 390)                       # a desktop, a phone
SCREENSHOTS = ("book/claims/scorecard", "book/claims/tokens_collapse", "book/claims/cifar10_scaling",
               "book/claims/longer_training")
# A figure drawn for the page (vqstudy.plots: about 6 inches at 100 dpi, fonts of 12 pt) is shown on a
# phone's column (about 340 px) at no less than this share of its size, where its text is still
# about 8 px or more; a figure of three panels a row was shown at a third.
LEGIBLE_SCALE = 0.44
BADGE_WORDS = {"holds", "does not hold", "no verdict", "holds, fragile", "does not hold, fragile"}

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
    shown = {"image/png", "application/papermill.record/image/png"}  # drawn in its cell, or glued for a {glue:figure}
    return sum(1 for c in nb.cells if c.cell_type == "code" and not hidden & set(c.metadata.get("tags", []))
               for o in c.get("outputs", []) if shown & set(o.get("data", {})))


DECODE_IMAGES = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.querySelectorAll('article img, main img'));
Promise.all(images.map(img => { img.loading = 'eager'; return img.decode().then(() => null, () => null); }))
  .then(() => done(images.map(img => [img.getAttribute('src'), img.naturalWidth, img.naturalHeight])));
"""

# What a reader would see spill out of the page's content column: every element wider than
# the column (or starting left of it) that is not inside a box that scrolls; the result
# tables that need their box to scroll; whether the page itself scrolls sideways; and the
# visible text (code excluded), to look for TeX.
LAYOUT = """
const article = document.querySelector('article.bd-article') || document.querySelector('main');
const column = article.getBoundingClientRect();
const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
const describe = (el, r) => `<${el.tagName.toLowerCase()} class="${el.className}"> spans ${Math.round(r.left)}-`
  + `${Math.round(r.right)} px, the column ${Math.round(column.left)}-${Math.round(column.right)} px: `
  + `"${(el.textContent || el.getAttribute('src') || '').trim().slice(0, 50)}"`;
const spilled = [];
for (const el of article.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0 || (r.right <= column.right + 1 && r.left >= column.left - 1)) continue;
  let a = el.parentElement, boxed = false;
  while (a && a !== article) { if (scrolls(a)) { boxed = true; break; } a = a.parentElement; }
  if (!boxed) spilled.push(describe(el, el.getBoundingClientRect()));
}
const scrollingTables = Array.from(article.querySelectorAll('table.vq-table')).filter(t => {
  let a = t.parentElement;
  while (a && a !== article) { if (a.scrollWidth > a.clientWidth + 1) return true; a = a.parentElement; }
  return false;
}).map(t => describe(t, t.getBoundingClientRect()));
const visible = article.cloneNode(true);
visible.querySelectorAll('pre, code, script, style, .highlight').forEach(e => e.remove());
return {spilled: spilled, scrollingTables: scrollingTables,
        sideways: document.documentElement.scrollWidth - window.innerWidth,
        text: visible.textContent,
        mathjax: Array.from(document.querySelectorAll('script[src]')).map(s => s.src).filter(s => /mathjax/i.test(s)),
        badges: Array.from(article.querySelectorAll('.sd-badge')).map(b => b.textContent.trim()),
        cards: article.querySelectorAll('.vq-card').length};
"""

# Every figure image of the page (an image of _images/): its alt text, the number and the text of
# the caption of the <figure> it is in ('' where there is none).
FIGURES = """
const article = document.querySelector('article.bd-article') || document.querySelector('main');
return Array.from(article.querySelectorAll('img')).filter(img => (img.getAttribute('src') || '').includes('_images/'))
  .map(img => {
    const figure = img.closest('figure');
    const caption = figure ? figure.querySelector('figcaption') : null;
    const number = caption ? caption.querySelector('.caption-number') : null;
    return {src: img.getAttribute('src'), alt: (img.getAttribute('alt') || '').trim(),
            natural: img.naturalWidth, shown: img.getBoundingClientRect().width,
            number: number ? number.textContent.trim() : '',
            caption: caption ? (caption.querySelector('.caption-text') || caption).textContent.trim() : ''};
  });
"""

# TeX a reader should never see: \( \) \[ \] $$, $x^2$-like spans, TeX commands, ^{ and _{.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\$[^$\s]{1,40}\$|\\(?:frac|mathrm|mathbf|text|sum|cdot|times|leq?"
                     r"|geq?|rho|sigma|mu|alpha|beta)\b|\^\{|_\{")



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


def full_page_screenshot(browser, width: int) -> bytes:
    """The whole page at ``width``: the window made as tall as the page, then put back."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(height + 100, 16000))
    png = browser.get_screenshot_as_png()
    browser.set_window_size(width, 1000)
    return png


def shown_verdicts(root: Path) -> int:
    """Verdicts the scorecard must show: every recorded one that is not superseded, and
    one per chapter that recorded none."""
    from vqstudy import claims

    count = 0
    for name in runner.executed_notebooks(root):
        verdicts = claims.read(root / runner.EXECUTED_DIR, name)
        count += 1 if verdicts is None else sum(v.get("role", "claim") != "superseded" for v in verdicts)
    return count


def test_every_page_reads_at_desktop_and_phone_widths(browser, site, tmp_path):
    root = site
    html = root / "_build" / "html"
    toc = pages(root)
    assert toc.index("book/claims/scorecard") == 1, "the scorecard is the first page after the introduction"
    chapters = set(runner.executed_notebooks(root))
    assert chapters
    screenshots = root / "_build" / "screenshots"
    screenshots.mkdir(parents=True, exist_ok=True)
    problems = []
    for width in WIDTHS:
        browser.set_window_size(width, 1000)
        for page in toc:
            where = f"{page} at {width} px"
            path = html / f"{page}.html"
            if not path.exists():
                problems.append(f"{page}: {path} was not built")
                continue
            browser.get(path.as_uri())
            for _ in range(20):  # headless Chromium now and then answers before the page's DOM is there
                title = browser.execute_script("const h = document.querySelector('article h1, main h1'); "
                                               "return h ? h.textContent.trim() : '';")
                if title:
                    break
                time.sleep(0.25)
            if not title:
                problems.append(f"{where}: no title (h1) on the page")
            images = browser.execute_async_script(DECODE_IMAGES)
            broken = [src for src, w, h in images if not (w > 0 and h > 0)]
            if broken:
                problems.append(f"{where}: images not decoded: {broken}")
            layout = browser.execute_script(LAYOUT)
            problems += [f"{where}: wider than the content column, not in a scroll box: {s}"
                         for s in layout["spilled"][:5]]
            if layout["sideways"] > 0:
                problems.append(f"{where}: the page scrolls sideways by {layout['sideways']} px")
            if width >= 1400:
                problems += [f"{where}: a result table does not fit the column (it scrolls): {t}"
                             for t in layout["scrollingTables"]]
            tex = sorted(set(RAW_TEX.findall(layout["text"])))
            if tex:
                problems.append(f"{where}: raw TeX visible: {tex}")
            if layout["mathjax"]:
                problems.append(f"{where}: loads MathJax {layout['mathjax']} (needs the network; write the "
                                "formula in plain text or Unicode)")
            name = page.rsplit("/", 1)[-1]
            if name in chapters or page == toc[0]:  # a chapter's figures and the introduction's lead figure
                for f in browser.execute_script(FIGURES):
                    if not re.fullmatch(r"Fig\. \d+\.?", f["number"]):
                        problems.append(f"{where}: figure {f['src']} has no numbered caption (a {{glue:figure}})")
                    if len(f["caption"]) < 40:
                        problems.append(f"{where}: figure {f['src']} has no caption saying what to look at: "
                                        f"{f['caption']!r}")
                    if len(f["alt"]) < 20 or f["alt"].endswith(".png"):
                        problems.append(f"{where}: figure {f['src']} has no alt text: {f['alt']!r}")
                    if width < 1400 and f["natural"] and f["shown"] < LEGIBLE_SCALE * f["natural"]:
                        problems.append(f"{where}: figure {f['src']} is shown at {f['shown'] / f['natural']:.0%} of "
                                        f"its size, its text too small to read (at most two panels a row, "
                                        "vqstudy.plots.panel_grid)")
            if name in chapters:
                expected = figures_in(root / runner.EXECUTED_DIR / f"{name}.ipynb")
                shown = sum(1 for src, _, _ in images if "_images/" in (src or ""))
                if expected == 0 or shown < expected:
                    problems.append(f"{where}: {shown} figures shown, its notebook has {expected}")
                if "Provenance." not in browser.find_element("tag name", "body").text:
                    problems.append(f"{where}: no provenance block")
            if page == "book/claims/scorecard":
                badges = [b for b in layout["badges"] if b in BADGE_WORDS]
                if len(badges) != shown_verdicts(root) or layout["cards"] != len(badges):
                    problems.append(f"{where}: {len(badges)} verdict badges and {layout['cards']} cards, for "
                                    f"{shown_verdicts(root)} verdicts: {layout['badges']}")
            if page == toc[0]:
                if not any(b in BADGE_WORDS for b in layout["badges"]):
                    problems.append(f"{where}: the introduction's summary shows no verdict badge")
                if not any(".lead" in (src or "") for src, _, _ in images):
                    problems.append(f"{where}: the introduction has no lead figure: {images}")
            png = full_page_screenshot(browser, width)
            shot = tmp_path / f"{name}-{width}.png"
            shot.write_bytes(png)
            if width == 1400 and page in SCREENSHOTS:
                (screenshots / f"{name}-{width}.png").write_bytes(png)
            if not not_blank(png):
                problems.append(f"{where}: the screenshot is blank ({shot})")
    scorecard = (root / runner.EXECUTED_DIR / "scorecard.md").read_text()
    for name in chapters:
        assert f"<{name}>`" in scorecard or f"`{name}`" in scorecard, f"the scorecard has no link to {name}"
    assert not problems, "\n".join(problems)
