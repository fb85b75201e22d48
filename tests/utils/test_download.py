"""Snapshot download of instantiate_template: checksum, cache, resume, and one line when it fails."""

import hashlib
import subprocess
import sys
import http.server
import os
import shutil
import threading

import pytest
import yaml

from conftest import REPO, template_path
from ote_detection.apis.instantiate import instantiate
from ote_detection.utils.errors import OteError

PAYLOAD = os.urandom(300_000)


class RangeHandler(http.server.BaseHTTPRequestHandler):
    requests = []

    def do_GET(self):  # noqa: N802
        RangeHandler.requests.append(self.headers.get("Range"))
        if self.path != "/snapshot.pth":
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _template_with_url(tmp_path, url, sha256, size):
    src = os.path.dirname(template_path())
    with open(template_path(), encoding="utf-8") as f:
        data = yaml.safe_load(f)
    data["dependencies"][0].update(source=url, sha256=sha256, size=size)
    folder = tmp_path / "tpl"
    folder.mkdir()
    for name in os.listdir(src):
        if name != "template.yaml":
            (folder / name).write_bytes(open(os.path.join(src, name), "rb").read())
    shutil.copytree(os.path.join(src, "..", "_base_"), tmp_path / "_base_")  # model.py's _base_
    # work-dir scripts are referenced relative to the template folder: point them at the repo
    for dep in data["dependencies"][1:]:
        dep["source"] = os.path.join(REPO, "tools", "workdir", os.path.basename(dep["source"]))
    (folder / "template.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return str(folder / "template.yaml")


def test_download_checksum_cache_and_resume(tmp_path, server, monkeypatch):
    monkeypatch.setenv("OTE_FACE_CACHE", str(tmp_path / "cache"))
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    template = _template_with_url(tmp_path, f"{server}/snapshot.pth", sha, len(PAYLOAD))
    # a partial download from an earlier, interrupted run is resumed with a Range request
    part = tmp_path / "cache" / "downloads" / sha / "snapshot.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:1000])
    RangeHandler.requests.clear()
    instantiate(template, str(tmp_path / "wd"))
    assert RangeHandler.requests == ["bytes=1000-"]
    assert (tmp_path / "wd" / "snapshot.pth").read_bytes() == PAYLOAD
    assert (tmp_path / "wd" / "train.py").exists() and (tmp_path / "wd" / "model.py").exists()
    # a second work dir comes from the cache, without a request
    RangeHandler.requests.clear()
    instantiate(template, str(tmp_path / "wd2"))
    assert RangeHandler.requests == [] and (tmp_path / "wd2" / "snapshot.pth").read_bytes() == PAYLOAD


def test_wrong_checksum_and_unreachable_host(tmp_path, server, monkeypatch):
    monkeypatch.setenv("OTE_FACE_CACHE", str(tmp_path / "cache"))
    template = _template_with_url(tmp_path, f"{server}/snapshot.pth", "0" * 64, None)
    with pytest.raises(OteError, match="expected 0000"):
        instantiate(template, str(tmp_path / "wd"))
    assert not (tmp_path / "wd" / "snapshot.pth").exists()


def test_a_larger_file_than_published_is_not_resumed(tmp_path, server, monkeypatch):
    """A mirror serving another release (more bytes than recorded): one line saying so, nothing kept to resume."""
    monkeypatch.setenv("OTE_FACE_CACHE", str(tmp_path / "cache"))
    template = _template_with_url(tmp_path, f"{server}/snapshot.pth", hashlib.sha256(PAYLOAD[:1000]).hexdigest(), 1000)
    for _ in range(2):  # the second try says the same: no partial file is left to resume
        with pytest.raises(OteError, match=r"300000 bytes, more than the published 1000: .*removed") as err:
            instantiate(template, str(tmp_path / "wd"))
        assert "resume" not in str(err.value)
    assert not list((tmp_path / "cache").rglob("*.part"))


@pytest.mark.slow
def test_offline_message_is_one_line(tmp_path):
    """The real template URL: unreachable here, so the CLI says how to go on."""
    env_cache = str(tmp_path / "cache")
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "instantiate_template.py"), template_path(),
                        str(tmp_path / "wd")], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OTE_FACE_CACHE=env_cache))
    if r.returncode == 0:
        pytest.skip("the snapshot site is reachable from this machine")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "--do-not-load-snapshot" in line and "snapshot.pth" in line
