"""The documented API: `gradio_client` calls /generate on a running app and gets the image back."""
import os

import numpy as np
import pytest
from PIL import Image

from app_server import running_app

client_api = pytest.importorskip("gradio_client", reason="gradio_client is not installed")
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def client(tiny_weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client_app")
    with running_app(tiny_weights.parent, tmp) as url:
        yield client_api.Client(url, verbose=False, download_files=str(tmp / "downloads"))


@pytest.fixture()
def mask_png(tmp_path):
    arr = np.zeros((120, 120), np.uint8)
    arr[50:70, :] = 255
    arr[:, 30:45] = 255
    Image.fromarray(arr).save(tmp_path / "mask.png")
    return str(tmp_path / "mask.png")


def test_only_the_documented_endpoint_is_public(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/generate"]


def test_generate_returns_the_image(client, mask_png):
    path = client.predict(client_api.handle_file(mask_png), "concat", "dpmpp", 4, 1.0, 3, api_name="/generate")
    image = np.asarray(Image.open(path))
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    again = np.asarray(Image.open(client.predict(client_api.handle_file(mask_png), "concat", "dpmpp", 4, 1.0, 3,
                                                 api_name="/generate")))
    assert np.array_equal(image, again)  # deterministic for a seed


def test_bad_requests_get_readable_errors_and_the_app_keeps_serving(client, mask_png, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(40))
    cases = [
        ((client_api.handle_file(str(broken)), "concat", "dpmpp", 4, 1.0, 0), "broken.png: unreadable image"),
        ((client_api.handle_file(mask_png), "spade", "dpmpp", 4, 1.0, 0), "No spade model yet"),
        ((client_api.handle_file(mask_png), "concat", "euler", 4, 1.0, 0), "unknown sampler"),
        ((client_api.handle_file(mask_png), "concat", "dpmpp", 0, 1.0, 0), "steps must be"),
        ((client_api.handle_file(mask_png), "concat", "dpmpp", 4, -2.0, 0), "guidance must be"),
    ]
    for args, expected in cases:
        with pytest.raises(Exception) as err:
            client.predict(*args, api_name="/generate")
        assert expected in str(err.value), (expected, str(err.value))
        assert "Traceback" not in str(err.value)
    path = client.predict(client_api.handle_file(mask_png), "concat", "ddim", 3, 1.0, 0, api_name="/generate")
    assert Image.open(path).size == (16, 16)


def test_server_files_outside_the_app_are_not_served(client):
    import urllib.error
    import urllib.request

    for path in ("gradio_api/file=/etc/passwd", "file=/etc/passwd", "gradio_api/file=app.py"):
        try:
            with urllib.request.urlopen(client.src.rstrip("/") + "/" + path, timeout=10) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            assert exc.code in (403, 404), (path, exc.code)
            continue
        assert b"root:" not in body and b"import gradio" not in body, path
