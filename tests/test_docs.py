"""The documentation: docs/ builds as a MkDocs site in strict mode (a broken link or anchor, or a page left out of
the nav, fails the build: ``validation`` in mkdocs.yml), and README.md stays short with working links into docs/."""

import pathlib
import re
import shutil
import subprocess
import sys

from markdown.extensions.toc import slugify

REPO = pathlib.Path(__file__).resolve().parent.parent
README_MAX_LINES = 200
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def mkdocs_build(root, site_dir):
    """``mkdocs build --strict`` of ``root/mkdocs.yml`` into ``site_dir``: (exit code, output)."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
                          cwd=root, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_docs_build_strict(tmp_path):
    code, output = mkdocs_build(REPO, tmp_path / "site")
    assert code == 0, output
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "measurements" / "index.html").is_file()


def test_docs_build_fails_on_broken_links_and_anchors(tmp_path):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "datasets.md", "a", encoding="utf-8") as f:
        f.write("\nSee [a](no_such_page.md), [b](training.md#no-such-section) and [c](#nor-here).\n")
    (tmp_path / "docs" / "orphan.md").write_text("# Not in the nav\n", encoding="utf-8")
    code, output = mkdocs_build(tmp_path, tmp_path / "site")
    assert code != 0, output
    for expected in ("'no_such_page.md'", "'#no-such-section'", "'#nor-here'", "orphan.md", "strict mode"):
        assert expected in output, output


def _anchors(page):
    """The heading anchors of a Markdown page as MkDocs makes them (the toc extension's slugify)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slugify(m.group(1).strip(), "-") for m in re.finditer(r"^#{1,6}\s+(.+)$", text, flags=re.M)}


def test_readme_is_short_and_its_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines"
    broken = []
    links = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    for target in links:
        path, _, anchor = target.partition("#")
        page = REPO / path if path else REPO / "README.md"
        if not page.exists():
            broken.append(f"{target}: no such file")
        elif anchor and page.suffix == ".md" and anchor not in _anchors(page):
            broken.append(f"{target}: no heading #{anchor} in {path or 'README.md'}")
    assert links and not broken, broken
