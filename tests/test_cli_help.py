"""Every command-line tool explains each of its flags."""

import importlib.util
import os

import pytest

from conftest import REPO

TOOLS = ["tools/instantiate_template.py", "tools/get_complexity.py", "tools/wider_to_coco.py",
         "tools/import_openvino_weights.py", "tools/make_synthetic_dataset.py", "tools/run_end_to_end.py",
         "tools/workdir/train.py", "tools/workdir/eval.py", "tools/workdir/export.py", "tools/workdir/visualize.py",
         "tools/workdir/compress.py", "tools/choose_input_size.py", "tools/cluster_anchors.py"]


@pytest.mark.parametrize("tool", TOOLS)
def test_help(tool, capsys):
    spec = importlib.util.spec_from_file_location("tool_under_test", os.path.join(REPO, tool))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    # each option has a help text (argparse prints it on the option's line or the next one)
    lines = out.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if line.startswith("  --") and len(stripped.split()) <= 2:  # an option line, not wrapped help text
            assert i + 1 < len(lines) and lines[i + 1].startswith(" " * 10), f"{tool}: {stripped} has no help"
