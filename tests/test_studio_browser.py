"""`ddpmlab studio` in a real browser: Playwright drives Debian's Chromium through every tab of the page.

The browser is the system one (/usr/bin/chromium, `apt-get install chromium chromium-driver`; `make test` installs
it where it can); PLAYWRIGHT_BROWSERS_PATH points at an empty folder, so nothing is ever downloaded (`ddpmlab.studio.browser`).
Every request the page makes to anything but the studio's loopback address is refused and fails the test.
Without Playwright or Chromium the module skips, saying which is missing.
"""

import importlib.util
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_studio import TIMEOUT, tiny_runs

from ddpmlab.studio.browser import CHROMIUM, choose, chromium, fill, free_port

pytest.importorskip("gradio", reason="the studio extra is not installed: pip install -e .[studio]")
VIEW = {"width": 1280, "height": 900}
MS = 30_000  # milliseconds any one wait in the page may take


@pytest.fixture(scope="module")
def browser():
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("browser tests need Playwright: pip install -e .[studio-test]")
    if not CHROMIUM.is_file():
        pytest.skip(f"browser tests need the system Chromium at {CHROMIUM}: apt-get install chromium chromium-driver")
    with chromium(timeout_ms=MS) as browser:
        yield browser


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    return tiny_runs(tmp_path_factory.getbasetemp() / "studio-runs")


@pytest.fixture(scope="module")
def studio(runs, one_thread):
    from ddpmlab.studio import start

    s = start([str(runs[k]) for k in ("plain", "cond", "noweights")], "127.0.0.1", free_port())
    yield s
    s.close()


def open_page(browser, studio):
    """A fresh page on the studio; requests to anything but the studio are refused and collected in page.outside."""
    page = browser.new_page(viewport=VIEW, accept_downloads=True)
    page.set_default_timeout(MS)
    page.outside = []
    base = studio.url.rstrip("/")

    def only_here(route):
        if route.request.url.startswith((base, "data:", "blob:")):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_here)
    page.goto(studio.url)
    page.wait_for_selector("#generate")
    page.wait_for_function("document.querySelector('#summary') && document.querySelector('#summary').innerText "
                           "!= ''")
    return page


@pytest.fixture(scope="module")
def page(browser, studio):
    """One page for the module (a page load costs seconds); the tests below run on it in order."""
    page = open_page(browser, studio)
    yield page
    page.close()


@pytest.fixture(autouse=True)
def nothing_from_outside(request):
    yield
    if "page" in request.fixturenames:
        page = request.getfixturevalue("page")
        assert page.outside == [], f"the page tried to load from outside the machine: {page.outside[:3]}"


def slow_steps(monkeypatch, seconds: float) -> None:
    """Every sampler step takes at least `seconds`: time for a second page, or Stop, to act mid-sampling."""
    from ddpmlab.studio.jobs import sampling

    draw = sampling._draw
    monkeypatch.setattr(sampling, "_draw", lambda run, n, labels, callback: draw(
        run, n, labels, lambda *a: (time.sleep(seconds), callback(*a))))


def record(page, selector: str) -> None:
    """Keep every picture the element at selector shows, in window.seen[selector]."""
    page.evaluate("""sel => {
        window.seen = window.seen || {};
        const seen = window.seen[sel] = [];
        const now = () => { const img = document.querySelector(sel + ' img'); return img && img.src; };
        const before = now();
        const note = () => { const src = now();
                             if (src && src !== before && seen[seen.length - 1] !== src) seen.push(src); };
        new MutationObserver(note).observe(document.querySelector(sel), {subtree: true, childList: true,
                                                                         attributes: true});
    }""", selector)


def fetch(page, url: str) -> bytes:
    response = page.request.get(url)
    assert response.ok
    return response.body()


def shown(page, selector: str) -> bytes:
    """The bytes of the picture an image component shows, as the browser got them."""
    page.wait_for_selector(f"{selector} img[src]")
    return fetch(page, page.locator(f"{selector} img").get_attribute("src"))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def check_screenshot(page, name: str, out: Path, size=VIEW) -> np.ndarray:
    """A viewport screenshot: the expected size and not blank (many distinct colours, not one flat page)."""
    data = page.screenshot(path=str(out / f"{name}.png"))
    shot = pixels(data)
    assert shot.shape[:2] == (size["height"], size["width"])
    colours = np.unique(shot[..., 0] * 65536 + shot[..., 1] * 256 + shot[..., 2])
    assert shot.std() > 10 and len(colours) > 50, f"{name} looks blank"
    return shot


def toast(page, text: str) -> None:
    page.get_by_text(text, exact=False).first.wait_for(state="visible")


def generate(page) -> None:
    """Press Generate and wait for the new grid and its time per image."""
    before = page.evaluate("() => { const i = document.querySelector('#grid img'); return i ? i.src : ''; }")
    page.click("#generate")
    page.wait_for_function("""before => { const i = document.querySelector('#grid img');
        return i && i.src && i.src !== before
               && document.querySelector('#sample-status').innerText.includes('s per image'); }""", arg=before)


def upload(page, selector: str, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator(f"{selector} button.upload-container").click()
    chooser.value.set_files(str(path))


def cli_png(run: Path, out: Path, *flags: str) -> bytes:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "ddpmlab", "sample", str(run), "--out", str(out), *flags], check=True,
                   env=env, timeout=TIMEOUT, capture_output=True)
    return out.read_bytes()


def test_sample_tab_streams_the_denoising_and_matches_ddpmlab_sample(page, runs, tmp_path):
    before = check_screenshot(page, "sample-before", tmp_path)
    choose(page, "#sampler", "ddpm")  # a new sampler: the spacing goes back to auto, as with --sampler
    assert page.locator("#sample-status").inner_text() == ""
    fill(page, "#steps", 40)
    fill(page, "#seed", 3)
    fill(page, "#images", 16)
    for sel in ("#frame-xt", "#frame-x0"):
        record(page, sel)
    generate(page)
    got = shown(page, "#grid")
    want = cli_png(runs["plain"], tmp_path / "cli.png", "--n", "16", "--seed", "3", "--sampler", "ddpm", "--steps",
                   "40")
    assert got == want  # the grid the page shows is `ddpmlab sample`'s PNG, byte for byte
    with page.expect_download() as download:
        page.click("#download-png")
    assert Path(download.value.path()).read_bytes() == want
    with page.expect_download() as download:
        page.click("#download-npz")
    with np.load(download.value.path()) as z, np.load(tmp_path / "cli.npz") as ref:
        assert np.array_equal(z["images"], ref["images"])
    frames = page.evaluate("window.seen['#frame-xt']")
    estimates = page.evaluate("window.seen['#frame-x0']")
    assert len(frames) >= 3 and len(estimates) >= 3, "x_t and x0 were not streamed while sampling"
    first, last = pixels(fetch(page, frames[0])), pixels(fetch(page, frames[-1]))
    assert first.shape == last.shape == (74, 74, 3)  # a 4 x 4 grid of 16 px images
    assert np.abs(first - last).mean() > 3  # the picture changes between steps
    assert np.array_equal(last, pixels(got))  # and ends at the sample
    after = check_screenshot(page, "sample-after", tmp_path)
    assert np.abs(after - before).mean() > 1


def test_every_other_tab(page, tmp_path):
    page.get_by_role("tab", name="Compare").click()
    page.click("#compare-go")
    page.get_by_text("A: ddim at 10 steps").wait_for()
    a, b = shown(page, "#grid-a"), shown(page, "#grid-b")
    assert a != b and pixels(a).shape == (56, 56, 3)  # 8 images: 3 columns
    check_screenshot(page, "compare", tmp_path)

    page.get_by_role("tab", name="Forward").click()
    page.get_by_text("t = 12, alpha_bar_t").wait_for()  # T / 4 of the run's T = 50
    noisy = shown(page, "#forward-xt")
    curve = pixels(shown(page, "#forward-curve"))
    fill(page, "#forward-t", 2)
    page.get_by_text("t = 2, alpha_bar_t").wait_for()
    clean = shown(page, "#forward-xt")
    assert pixels(noisy).shape == (16, 16, 3) and noisy != clean
    assert not np.array_equal(curve, pixels(shown(page, "#forward-curve")))  # the marker moved
    check_screenshot(page, "forward", tmp_path)

    page.get_by_role("tab", name="Run").click()
    page.get_by_text('name = "mnist"').first.wait_for()
    assert pixels(shown(page, "#run-loss")).std() > 5
    check_screenshot(page, "run", tmp_path)


def test_guidance_and_edit_tabs_on_the_conditional_run(page, runs, tmp_path):
    choose(page, "#run", str(runs["cond"]))
    page.get_by_text("2 classes").wait_for()
    page.get_by_role("tab", name="Guidance").click()
    page.click("#guidance-go")
    page.get_by_text("the same seeds in every block").wait_for()
    assert pixels(shown(page, "#guidance-out")).shape[1] > 300
    check_screenshot(page, "guidance", tmp_path)

    page.get_by_role("tab", name="Edit").click()
    page.click("#edit-use")
    page.click("#sdedit-go")
    sdedit = shown(page, "#edit-out")
    assert pixels(sdedit).shape == (20, 6 * 18 + 2, 3)  # input, noised, 4 edits
    page.click("#editor button[aria-label=Brush]")
    box = page.locator("#editor canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.4)
    page.mouse.down()
    for k in range(4):  # a stroke across the middle of the picture, as a hand draws it
        page.mouse.move(box["x"] + box["width"] * (0.45 + k * 0.03), box["y"] + box["height"] * (0.4 + k * 0.06))
    page.mouse.up()
    record(page, "#edit-out")
    page.click("#inpaint-go")
    page.wait_for_function("window.seen['#edit-out'].length > 0")
    filled = shown(page, "#edit-out")
    assert filled != sdedit and pixels(filled).shape == (20, 6 * 18 + 2, 3)
    record(page, "#edit-out")
    page.click("#interpolate-go")
    page.wait_for_function("window.seen['#edit-out'].length > 0")
    assert pixels(shown(page, "#edit-out")).shape == (20, 8 * 18 + 2, 3)
    check_screenshot(page, "edit", tmp_path)


def test_bad_input_gets_a_message_in_the_page_and_the_server_keeps_serving(page, runs, tmp_path):
    page.get_by_role("tab", name="Sample").click()
    choose(page, "#run", str(runs["noweights"]))
    page.get_by_text("noweights").first.wait_for()
    page.click("#generate")
    toast(page, "the run has no saved weights yet")
    page.get_by_role("tab", name="Forward").click()
    words = tmp_path / "words.png"
    words.write_text("not a picture")
    page.locator("#forward-source").get_by_label("upload", exact=True).check()
    upload(page, "#forward-upload", words)
    toast(page, "words.png is not an image")
    page.locator("#forward-upload button[aria-label=Clear]").first.click()
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (8 * 2**20 + 1024))
    upload(page, "#forward-upload", huge)
    toast(page, "exceed the maximum allowed size of 8.0 Mb")  # refused before it reaches the server
    page.get_by_role("tab", name="Sample").click()
    choose(page, "#run", str(runs["plain"]))
    page.get_by_text("unconditional").first.wait_for()
    generate(page)


def test_two_pages_sampling_at_once_are_queued(browser, studio, page, monkeypatch):
    slow_steps(monkeypatch, 0.03)
    page.get_by_role("tab", name="Sample").click()
    other = open_page(browser, studio)
    try:
        for p in (page, other):
            choose(p, "#sampler", "ddim")
            fill(p, "#steps", 30)
            fill(p, "#seed", 5)
            fill(p, "#images", 16)
            record(p, "#frame-xt")
            record(p, "#grid")
        page.click("#generate")
        page.wait_for_function("window.seen['#frame-xt'].length > 0")  # the first page is sampling
        other.evaluate("""() => { window.queued = false; new MutationObserver(() => {
            if (/queue: *\\d/.test(document.body.innerText)) window.queued = true; })
            .observe(document.body, {subtree: true, childList: true, characterData: true}); }""")
        other.click("#generate")
        for p in (page, other):
            p.wait_for_function("window.seen['#grid'].length > 0")
        assert other.evaluate("window.queued"), "the second page never showed its place in the queue"
        assert shown(page, "#grid") == shown(other, "#grid")  # same settings, same seed: same grid
        assert other.outside == []
    finally:
        other.close()


def test_stop_ends_sampling_and_the_page_samples_again(page, monkeypatch):
    slow_steps(monkeypatch, 0.05)
    page.get_by_role("tab", name="Sample").click()
    choose(page, "#sampler", "ddpm")
    fill(page, "#steps", 40)
    record(page, "#frame-xt")
    page.click("#generate")
    page.wait_for_function("window.seen['#frame-xt'].length > 0")
    page.click("#stop")
    time.sleep(0.5)
    assert page.locator("#grid img[src]").count() == 0 and "s per image" not in page.inner_text("#sample-status")
    monkeypatch.undo()
    generate(page)
    assert shown(page, "#grid")
