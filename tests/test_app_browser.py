"""End to end in headless Chromium (Debian's /usr/bin/chromium driven by playwright): draw, run, stream,
upload, a corrupt upload, a short training started and stopped from the Train tab, and an evaluation."""
import os
import re

import numpy as np
import pytest
from PIL import Image

from app_server import app_log, running_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.timeout(240)
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def app_url(tiny_weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser_app")
    with running_app(tiny_weights.parent, tmp) as url:
        yield url
    if os.environ.get("RETREE_SHOW_APP_LOG"):
        print(app_log(tmp))


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
        yield b
        b.close()


@pytest.fixture()
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.goto(app_url)
    pg.locator("#rt-canvas canvas").first.wait_for()
    yield pg
    context.close()


def counter_text(pg) -> str:
    return pg.locator("#rt-counter").inner_text()


def record_counter(pg) -> None:
    """Collect every text the step counter shows (frames can be faster than polling)."""
    pg.evaluate("""() => {
        window.__counter = [];
        const el = document.querySelector('#rt-counter');
        new MutationObserver(() => window.__counter.push(el.innerText))
            .observe(el, {subtree: true, childList: true, characterData: true});
    }""")


def set_number(pg, elem_id: str, value) -> None:
    box = pg.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def wait_image(pg, elem_id: str) -> None:
    """Wait for the component's image to show; on a timeout, fail with what its <img> elements hold."""
    try:
        pg.locator(f"#{elem_id} img").wait_for()
    except playwright_api.TimeoutError:
        state = pg.evaluate("""id => [...document.querySelectorAll(`#${id} img`)].map(i => {
            const box = i.getBoundingClientRect();
            return {src: i.src.slice(-80), complete: i.complete, natural: [i.naturalWidth, i.naturalHeight],
                    box: [box.width, box.height]};
        })""", elem_id)
        raise AssertionError(f"#{elem_id} shows no image: {state or 'no <img>'}; counter: {counter_text(pg)!r}")


def run_and_wait(pg, steps: int = 12) -> list[str]:
    record_counter(pg)
    pg.locator("#rt-run").click()
    pg.wait_for_function("() => window.__counter.some(t => t.includes('done'))", timeout=WAIT_MS)
    wait_image(pg, "rt-result")
    return pg.evaluate("window.__counter")


def draw_strokes(pg) -> None:
    canvas = pg.locator("#rt-canvas canvas").first
    box = canvas.bounding_box()
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    for (ax, ay), (bx, by) in [((0.2, 0.5), (0.8, 0.5)), ((0.5, 0.15), (0.45, 0.85))]:
        pg.mouse.move(x0 + ax * w, y0 + ay * h)
        pg.mouse.down()
        for t in np.linspace(0, 1, 6):
            pg.mouse.move(x0 + (ax + (bx - ax) * t) * w, y0 + (ay + (by - ay) * t) * h)
        pg.mouse.up()


def test_draw_run_streams_frames_and_shows_result(page):
    page.wait_for_function("() => document.querySelector('#rt-seen-note').innerText.includes('canvas is empty')")
    draw_strokes(page)
    page.wait_for_function("() => document.querySelector('#rt-seen-note').innerText.includes('% vessel')")
    wait_image(page, "rt-seen")
    page.get_by_text("DDPM (ancestral)").click()
    set_number(page, "rt-steps", 30)
    seen = run_and_wait(page)
    steps_seen = {m.group(1) for text in seen if (m := re.search(r"step (\d+) / 30", text))}
    assert len(steps_seen) >= 2, seen  # frames streamed, not just the end
    wait_image(page, "rt-xt")
    wait_image(page, "rt-x0")
    page.wait_for_function("() => document.querySelector('#rt-fidelity').innerText.includes('Dice')")
    assert page.get_by_text("Download image (PNG)").is_visible()


def test_upload_mask_then_corrupt_upload_then_run_again(page, tmp_path):
    good = tmp_path / "mask_upload.png"
    arr = np.zeros((300, 400), np.uint16)
    arr[140:170, :] = 65535
    arr[:, 180:210] = 65535
    Image.fromarray(arr).save(good)  # 16-bit, not square
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))

    page.get_by_role("tab", name="Upload").click()
    page.locator("#rt-upload input[type=file]").set_input_files(str(good))
    page.wait_for_function("() => document.querySelector('#rt-upload-note').innerText.includes('mask_upload.png')")
    page.wait_for_function("() => document.querySelector('#rt-seen-note').innerText.includes('% vessel')")
    set_number(page, "rt-steps", 4)
    run_and_wait(page)

    page.locator("#rt-upload button[aria-label='Clear']").first.click()
    page.locator("#rt-upload input[type=file]").set_input_files(str(bad))
    error = page.get_by_text(re.compile("broken.png: unreadable image"))
    error.first.wait_for()
    assert "Traceback" not in page.content()
    page.wait_for_timeout(300)
    wait_image(page, "rt-result")
    run_and_wait(page)  # the canvas still holds the good mask: the app keeps working


def start_training(pg, size: str, steps: int, every: int, name: str) -> None:
    """Fill the Train tab for a tiny run (batch 2) and press Start."""
    pg.locator("#rt-train-preset").get_by_text("tiny", exact=True).click()
    pg.locator("#rt-train-size").get_by_text(size, exact=True).click()
    set_number(pg, "rt-train-batch", 2)
    set_number(pg, "rt-train-steps", steps)
    set_number(pg, "rt-train-every", every)
    pg.locator("#rt-train-name textarea, #rt-train-name input").first.fill(name)
    pg.locator("#rt-train-start").click()


def test_start_and_stop_a_short_training(page):
    page.get_by_role("tab", name="Train").click()
    start_training(page, "16", 100000, 100000, "browser_run")
    page.wait_for_function(
        "() => /running.*step [1-9]/.test(document.querySelector('#rt-train-status').innerText)", timeout=WAIT_MS)
    assert "img/s" in page.locator("#rt-train-status").inner_text()
    page.locator("#rt-train-stop").click()
    page.wait_for_function("() => document.querySelector('#rt-train-status').innerText.includes('stopped')",
                           timeout=WAIT_MS)
    page.locator("#rt-train-download").wait_for()
    assert "browser_run" in page.locator("#rt-train-status").inner_text()
    page.get_by_role("tab", name="Generate").click()  # the stopped run is now a model to choose
    page.locator("#rt-model input").click()
    page.get_by_role("option", name=re.compile("run: browser_run")).wait_for()


def test_evaluate_a_segmenter_on_the_embedded_example(page):
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#rt-eval").click()
    page.wait_for_function("() => /f1 \\d/.test(document.querySelector('#rt-eval-summary').innerText)",
                           timeout=WAIT_MS)
    summary = page.locator("#rt-eval-summary").inner_text()
    assert "classical ridge filter" in summary and "auc" in summary


def test_train_a_segmenter_and_evaluate_it(page):
    page.get_by_role("tab", name="Train").click()
    page.locator("#rt-train-role").get_by_text("Vessel trees (stage 1)", exact=True).click()
    page.locator("#rt-train-soft").wait_for()  # the vessel model's options: procedural share, soft target
    assert page.locator("#rt-train-soft input").input_value() == "1.5"
    page.locator("#rt-train-role").get_by_text("Vessel segmenter", exact=True).click()
    page.locator("#rt-train-synth").wait_for()  # the segmenter's options: synthetic pairs, share, start from
    page.locator("#rt-train-soft").wait_for(state="hidden")
    page.wait_for_function("() => document.querySelector('#rt-train-preset input[value=fine]').checked")
    start_training(page, "32", 3, 1, "browser_seg")
    page.wait_for_function("() => document.querySelector('#rt-train-status').innerText.includes('finished')",
                           timeout=WAIT_MS)
    assert "Evaluate as 'run: browser_seg" in page.locator("#rt-train-status").inner_text()
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#rt-eval-segmenter input").click()
    page.get_by_role("option", name=re.compile("run: browser_seg")).click()
    page.locator("#rt-eval").click()
    page.wait_for_function("() => /f1 \\d/.test(document.querySelector('#rt-eval-summary').innerText)",
                           timeout=WAIT_MS)
    assert "learned segmenter model" in page.locator("#rt-eval-summary").inner_text()


def test_edit_a_photograph_by_erasing_a_stroke_of_its_tree(page, tmp_path):
    from retree_core.data import embedded_example

    Image.fromarray(embedded_example()[0]).resize((300, 300)).save(tmp_path / "photo.png")
    page.get_by_role("tab", name="Edit a photograph").click()
    page.locator("#rt-edit-upload input[type=file]").set_input_files(str(tmp_path / "photo.png"))
    page.wait_for_function("() => document.querySelector('#rt-edit-note').innerText.includes('on the canvas')")
    canvas = page.locator("#rt-edit-canvas canvas").first
    box = canvas.bounding_box()

    def band(tool: str, size_button: str, left: float, right: float) -> None:
        """One wide zig-zag stroke over a band (a 16 px model pixel is 32 canvas pixels: thin lines vanish)."""
        page.locator(f"#rt-edit-canvas button[aria-label='{tool}']").click()
        page.locator(f"#rt-edit-canvas button[aria-label='{size_button}']").click()
        page.locator("#rt-edit-canvas input[type=range]").first.fill("80")
        x = lambda f: box["x"] + f * box["width"]  # noqa: E731
        page.mouse.move(x(left), box["y"] + 0.35 * box["height"])
        page.mouse.down()
        for i, row in enumerate(np.linspace(0.35, 0.65, 4)):
            page.mouse.move(x(right if i % 2 == 0 else left), box["y"] + row * box["height"], steps=3)
        page.mouse.up()

    band("Brush", "Brush Size", 0.2, 0.8)  # the tiny model's tree is nearly empty: draw a wide vessel band,
    band("Erase", "Eraser Size", 0.5, 0.8)  # then erase part of it
    page.locator("#rt-edit-run").click()
    page.wait_for_function("() => document.querySelector('#rt-edit-counter').innerText.includes('done')")
    text = page.locator("#rt-edit-fidelity").inner_text()
    assert re.search(r"[\d,]+ pixels changed, all inside the edit region", text) and "Mask fidelity" in text
    assert not re.search(r"^0 pixels changed", text)
    page.get_by_text("Download the edited photograph").wait_for()
