"""Open Model Zoo weights by name (tools/import_openvino_weights.py --download, instantiate_template.py
--omz-weights) against a server on 127.0.0.1 serving ../shared/models/omz in OMZ's storage layout.

The shared face-detection-0204 FP16 and FP16-INT8 files are byte for byte the ones Open Model Zoo
publishes (their sha384 equal the template's, copied from OMZ's model.yml); the shared 0200 files are of
another OMZ release, and there is no 0202 IR here: 0202 is not checked against a real IR.
"""

import http.server
import os
import subprocess
import sys
import threading

import pytest
import yaml

from conftest import REPO, SHARED, need_shared, run_here, template_path
from ote_detection.apis.omz_weights import download_omz_ir, omz_files, omz_templates
from ote_detection.config import load_template
from ote_detection.utils.download import file_digest
from ote_detection.utils.errors import OteError


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with Range support (resume); records the Range headers it was sent."""
    ranges = []
    corrupt = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=os.path.join(SHARED, "models", "omz"), **kwargs)

    def do_GET(self):  # noqa: N802
        _Handler.ranges.append(self.headers.get("Range"))
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, "rb").read()
        if _Handler.corrupt and path.endswith(".bin"):
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture()
def omz_server(monkeypatch, tmp_path):
    need_shared("models", "omz", "face-detection-0204")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("OTE_FACE_OMZ_URL", url)
    monkeypatch.setenv("OTE_FACE_CACHE", str(tmp_path / "cache"))
    _Handler.ranges, _Handler.corrupt = [], False
    yield url
    httpd.shutdown()


def test_templates_record_omz_files():
    known = omz_templates()
    assert set(known) == {"face-detection-0200", "face-detection-0202", "face-detection-0204"}
    for name, path in known.items():
        section = load_template(path)["omz_weights"]
        assert set(section["files"]) == {"FP32", "FP16", "FP16-INT8"}
        for precision in section["files"]:
            for url, size, digest, fname in omz_files(path, precision):
                assert url.startswith("https://storage.openvinotoolkit.org/repositories/open_model_zoo/")
                assert f"/{name}/{precision}/{fname}" in url and size > 0 and len(digest) == 96


def test_shared_0204_files_are_omz_published_ones():
    need_shared("models", "omz", "face-detection-0204")
    for url, size, digest, fname in omz_files(template_path("face-detection-0204"), "FP16"):
        local = os.path.join(SHARED, "models", "omz", "face-detection-0204", "FP16", fname)
        assert os.path.getsize(local) == size and file_digest(local, "sha384") == digest


def test_download_checksum_cache_resume_and_corrupt(omz_server, tmp_path):
    tpl = template_path("face-detection-0204")
    (url_xml, size_xml, sha_xml, _), (url_bin, size_bin, sha_bin, bin_name) = omz_files(tpl, "FP16")
    # an interrupted earlier download of the .bin is resumed with a Range request
    part = tmp_path / "cache" / "downloads" / sha_bin / (bin_name + ".part")
    part.parent.mkdir(parents=True)
    src = os.path.join(SHARED, "models", "omz", "face-detection-0204", "FP16", bin_name)
    part.write_bytes(open(src, "rb").read()[:100_000])
    xml = download_omz_ir(tpl, "FP16", str(tmp_path / "ir"))
    assert _Handler.ranges == [None, "bytes=100000-"]
    assert file_digest(xml, "sha384") == sha_xml
    assert file_digest(xml.replace(".xml", ".bin"), "sha384") == sha_bin
    # again: nothing fetched (files in place); another folder: from the cache, nothing fetched
    _Handler.ranges = []
    assert download_omz_ir(tpl, "FP16", str(tmp_path / "ir")) == xml
    download_omz_ir(tpl, "FP16", str(tmp_path / "ir2"))
    assert _Handler.ranges == []
    # a corrupt file is refused and removed, nothing is left at the destination
    _Handler.corrupt = True
    with pytest.raises(OteError, match="sha384 .* expected .*the file was removed"):
        download_omz_ir(tpl, "FP16-INT8", str(tmp_path / "int8"))
    assert not (tmp_path / "int8" / "face-detection-0204.bin").exists()
    assert not list((tmp_path / "cache" / "downloads").glob("*/face-detection-0204.bin.part"))


@pytest.mark.slow
def test_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OTE_FACE_CACHE", str(tmp_path / "cache"))  # read when the tool downloads
    monkeypatch.setenv("OTE_FACE_OMZ_URL", "http://127.0.0.1:9")
    r = run_here([os.path.join(REPO, "tools", "import_openvino_weights.py"), "--download", "face-detection-0204",
                  str(tmp_path / "s.pth")])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot download http://127.0.0.1:9/face-detection-0204/FP16/") and \
        "OTE_FACE_OMZ_URL" in line
    r = run_here([os.path.join(REPO, "tools", "import_openvino_weights.py"), "--download", "face-detection-0299",
                  str(tmp_path / "s.pth")])
    assert r.returncode == 2 and "known: face-detection-0200, face-detection-0202, face-detection-0204" in r.stderr


@pytest.mark.slow
def test_download_and_import_cli_and_instantiate_fallback(omz_server, tmp_path):
    """--download imports the fetched IR into a snapshot; instantiate_template --omz-weights does the same when
    the OTE snapshot URL cannot be reached (a template copy whose snapshot URL is the closed port 9)."""
    env = dict(os.environ)
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "import_openvino_weights.py"), "--download",
                        "face-detection-0204", "--ir-dir", str(tmp_path / "ir"), str(tmp_path / "s.pth")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "s.pth").is_file() and (tmp_path / "ir" / "face-detection-0204.xml").is_file()
    # instantiate: the snapshot URL is unreachable -> the OMZ IR is fetched and imported
    src = os.path.dirname(template_path("face-detection-0204"))
    folder = tmp_path / "tpl" / "face-detection-0204"
    folder.mkdir(parents=True)
    data = yaml.safe_load(open(template_path("face-detection-0204")))
    data["dependencies"][0]["source"] = "http://127.0.0.1:9/face-detection-0204.pth"
    for dep in data["dependencies"][1:]:
        dep["source"] = os.path.join(REPO, "tools", "workdir", os.path.basename(dep["source"]))
    for name in os.listdir(src):
        if name != "template.yaml":
            (folder / name).write_bytes(open(os.path.join(src, name), "rb").read())
    import shutil
    shutil.copytree(os.path.join(src, "..", "_base_"), tmp_path / "tpl" / "_base_")
    (folder / "template.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    r = run_here([os.path.join(REPO, "tools", "instantiate_template.py"), str(folder / "template.yaml"),
                  str(tmp_path / "wd"), "--omz-weights"])  # (the import CLI ran in a process of its own above)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "wd" / "snapshot.pth").is_file()
    assert "importing Open Model Zoo's FP16 IR instead" in r.stderr
    # without --omz-weights the same failure is the usual one line
    r = run_here([os.path.join(REPO, "tools", "instantiate_template.py"), str(folder / "template.yaml"),
                  str(tmp_path / "wd2")])
    assert r.returncode == 2 and "--omz-weights" in r.stderr.strip().splitlines()[-1]
