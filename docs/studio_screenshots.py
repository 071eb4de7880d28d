"""Screenshots of every tab of `ddpmlab studio` for the README, taken in the system Chromium through Playwright.

    python docs/studio_screenshots.py runs/mnist --cond-run runs/mnist-cond --out docs

Serves the studio on a free loopback port, clicks through Sample (mid-way through the denoising, and done),
Compare, Forward, Guidance (needs --cond-run), Edit (a stroke painted for inpainting) and Run, and writes
studio_<tab>.png into --out. Needs the studio-test extra and Debian's chromium package.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ddpmlab.studio.browser import choose, chromium, fill, free_port, wait_for_text

VIEW = {"width": 1280, "height": 960}
WAIT_S = 600  # sampling a real run's grid takes a while


def shoot(page, out: Path, name: str, selector: str | None = None) -> None:
    """The page from the top down to the bottom of `selector` (default: the viewport)."""
    import io

    from PIL import Image

    path = out / f"studio_{name}.png"
    if selector is None:
        page.screenshot(path=str(path))
    else:
        page.evaluate("window.scrollTo(0, 0)")
        box = page.locator(selector).bounding_box()
        whole = Image.open(io.BytesIO(page.screenshot(full_page=True)))
        whole.crop((0, 0, whole.width, min(whole.height, int(box["y"] + box["height"] + 16)))).save(path)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="an image run (the Sample, Compare, Forward, Edit and Run tabs)")
    ap.add_argument("--cond-run", help="a class-conditional run (the Guidance tab)")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    out = Path(args.out)
    from ddpmlab.studio import start

    studio = start([args.run, *([args.cond_run] if args.cond_run else [])], "127.0.0.1", free_port())
    try:
        with chromium() as browser:
            page = browser.new_page(viewport=VIEW, device_scale_factor=1)
            page.set_default_timeout(600_000)
            page.goto(studio.url)
            wait_for_text(page, "#summary", "schedule", WAIT_S)

            fill(page, "#images", 64)
            page.click("#generate")
            wait_for_text(page, "#sample-status", "step 9", WAIT_S)
            shoot(page, out, "sample_streaming")
            wait_for_text(page, "#sample-status", "s per image", WAIT_S)
            page.wait_for_selector("#grid img[src]")
            time.sleep(1)
            shoot(page, out, "sample", "#download-png")

            page.get_by_role("tab", name="Compare").click()
            fill(page, "#compare-n", 16)
            page.click("#compare-go")
            wait_for_text(page, "#compare-status", "per image; B", WAIT_S)
            time.sleep(1)
            shoot(page, out, "compare", "#grid-a")

            page.get_by_role("tab", name="Forward").click()
            fill(page, "#forward-t", 400)
            wait_for_text(page, "#forward-text", "t = 400,", WAIT_S)
            time.sleep(1)
            shoot(page, out, "forward", "#forward-curve")

            if args.cond_run:
                choose(page, "#run", args.cond_run)
                wait_for_text(page, "#summary", "classes", WAIT_S)
                page.get_by_role("tab", name="Guidance").click()
                page.click("#guidance-go")
                wait_for_text(page, "#guidance-status", "the same seeds", WAIT_S)
                time.sleep(1)
                shoot(page, out, "guidance", "#guidance-out")
                choose(page, "#run", args.run)
                wait_for_text(page, "#summary", "unconditional", WAIT_S)

            page.get_by_role("tab", name="Edit").click()
            fill(page, "#edit-index", 7)
            page.click("#edit-use")
            time.sleep(1)
            page.click("#editor button[aria-label=Brush]")
            box = page.locator("#editor canvas").first.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx - 60, cy - 10)
            page.mouse.down()
            for k in range(30):
                page.mouse.move(cx - 60 + 4 * k, cy - 10 + (k % 10 - 5), steps=2)
                time.sleep(0.01)
            page.mouse.up()
            page.click("#inpaint-go")
            page.wait_for_selector("#edit-out img[src]")
            time.sleep(1)
            shoot(page, out, "edit", "#interpolate-go")

            page.get_by_role("tab", name="Run").click()
            page.wait_for_selector("#run-loss img[src]")
            time.sleep(1)
            shoot(page, out, "run")
    finally:
        studio.close()


if __name__ == "__main__":
    main()
