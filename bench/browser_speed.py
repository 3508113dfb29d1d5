"""Speed of the Generate tab as a user sees it: app.py served on localhost, headless Chromium (Debian's
/usr/bin/chromium, driven by playwright) picks an example mask and presses Run at the default settings.

Prints the time from the click on Run to the first streamed frame on screen and to the final image on
screen (medians over --repeats runs after one warm-up run), for the models in --weights-dir.

    python bench/browser_speed.py [--weights-dir weights] [--repeats 5] [--screenshot page.png]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from app_server import running_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Timestamps (page clock, ms) of the click on Run, the first x_t frame and the result image. Run first
# clears both pictures, so a picture counts once it is shown again after being cleared.
WATCH = """() => {
    if (window.__obs) window.__obs.disconnect();
    const t = window.__t = {};
    const src = (id) => { const img = document.querySelector(id + ' img'); return img ? img.src : null; };
    const cleared = {};
    document.querySelector('#rt-run').addEventListener('click', () => {
        t.click = performance.now();
        cleared.frame = !src('#rt-xt');
        cleared.result = !src('#rt-result');
    }, {once: true, capture: true});
    window.__obs = new MutationObserver(() => {
        if (!t.click) return;
        const now = performance.now();
        for (const [key, id] of [['frame', '#rt-xt'], ['result', '#rt-result']]) {
            if (t[key]) continue;
            if (!src(id)) cleared[key] = true;
            else if (cleared[key]) t[key] = now;
        }
    });
    window.__obs.observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


def one_run(page) -> tuple[float, float]:
    page.evaluate(WATCH)
    page.locator("#rt-run").click()
    page.wait_for_function("() => window.__t.result", timeout=120_000)
    t = page.evaluate("window.__t")
    # the run's event ends with the fidelity overlay; Run is ignored while its event is still going
    page.wait_for_function("() => /Mask fidelity/.test(document.querySelector('#rt-fidelity').innerText)",
                           timeout=120_000)
    return (t["frame"] - t["click"]) / 1000, (t["result"] - t["click"]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-dir", default=str(ROOT / "weights"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screenshot", default=None, help="save the page after the last run to this PNG")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="retree_browser_speed_") as tmp, \
            running_app(Path(args.weights_dir), Path(tmp)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.get_by_role("tab", name="Examples").click()
        page.locator("#rt-examples img").first.click()
        page.wait_for_function("() => document.querySelector('#rt-seen-note').innerText.includes('% vessel')")
        model_note = page.locator("#rt-model input").input_value()
        warm = one_run(page)
        print(f"model {model_note!r}; default settings; warm-up run: first frame {warm[0]:.2f} s, "
              f"final image {warm[1]:.2f} s")
        runs = []
        for _ in range(args.repeats):
            runs.append(one_run(page))
        for i, label in enumerate(("click to first frame on screen", "click to final image on screen")):
            values = [r[i] for r in runs]
            print(f"{label}: median {statistics.median(values):.2f} s "
                  f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})")
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
