"""The documented API: `gradio_client` calls /generate on a running app and gets the image back."""
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_server import post_upload, running_app

client_api = pytest.importorskip("gradio_client", reason="gradio_client is not installed")
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("client_app")


@pytest.fixture(scope="module")
def client(tiny_weights, app_dir):
    with running_app(tiny_weights.parent, app_dir) as url:
        yield client_api.Client(url, verbose=False, download_files=str(app_dir / "downloads"))


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


def http_status(client, path: str) -> int:
    """Status of a GET from a stranger: no cookies, no session."""
    try:
        with urllib.request.urlopen(client.src.rstrip("/") + "/" + path, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_server_files_outside_the_app_are_not_served(client, app_dir, tiny_weights, tiny_checkpoint):
    other_session = app_dir / "work" / "outputs" / "anothersession"  # where Run puts a session's downloads
    other_session.mkdir(parents=True, exist_ok=True)
    (other_session / "retree_concat_seed0.png").write_bytes(b"\x89PNG another session's image")
    secret = ["/etc/passwd", "/proc/self/environ", str(other_session / "retree_concat_seed0.png"),
              str(app_dir / "app.log"), str(tiny_weights), str(tiny_checkpoint), str(other_session), "app.py",
              "retree_core/weights.py"]
    routes = [f"{route}{path}" for route in ("gradio_api/file=", "file=") for path in secret]
    routes += ["gradio_api/file=%2Fetc%2Fpasswd", "gradio_api/file=/tmp/../etc/passwd",
               "gradio_api/file=..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd", "gradio_api/file=../../../../../etc/passwd",
               "static/../../../../etc/passwd", "assets/../../app.py", "gradio_api/file=" + tempfile.gettempdir()]
    for route in routes:
        assert http_status(client, route) in (403, 404), route


def test_result_files_are_not_listed(client, mask_png):
    result = client_api.Client(client.src, verbose=False, download_files=False).predict(
        client_api.handle_file(mask_png), "concat", "dpmpp", 2, 1.0, 0, api_name="/generate")
    folder = Path(result["path"]).parent
    assert http_status(client, f"gradio_api/file={folder}") in (403, 404)  # no listing of the cache
    assert http_status(client, f"gradio_api/file={folder.parent}") in (403, 404)
    # the file itself is served to whoever holds its URL (a hash of its content; gradio's design)
    assert http_status(client, result["url"].split("/", 3)[3]) == 200


def test_uploads_over_the_size_limit_are_refused(client):
    limit = 200 * 2**20  # StudioSettings.max_upload_mb, passed to gradio as max_file_size
    status, body = post_upload(client.src, limit + 2**20)
    assert status == 413 and b"maximum allowed size" in body
