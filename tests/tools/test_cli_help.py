"""Every command-line tool explains each of its flags."""

import importlib.util
import os
import sys

import pytest

from conftest import REPO, run_tool

TOOLS = ["tools/instantiate_template.py", "tools/get_complexity.py", "tools/wider_to_coco.py",
         "tools/import_openvino_weights.py", "tools/make_synthetic_dataset.py", "tools/run_end_to_end.py",
         "tools/workdir/train.py", "tools/workdir/eval.py", "tools/workdir/export.py", "tools/workdir/visualize.py",
         "tools/workdir/compress.py", "tools/choose_input_size.py", "tools/cluster_anchors.py",
         "tools/convert_dataset.py"]


def load(tool):
    spec = importlib.util.spec_from_file_location("tool_under_test", os.path.join(REPO, tool))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tool", TOOLS)
def test_help(tool, capsys):
    module = load(tool)
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


# a range error of each kind of tool: (tool, arguments)
BAD_VALUES = [("tools/workdir/train.py", ["--train-ann-files", "a.json", "--save-checkpoints-to", "out",
                                          "--epochs", "0"]),
              ("tools/workdir/compress.py", ["--base-learning-rate", "-1"]),
              ("tools/workdir/eval.py", ["--batch-size", "0"]),
              ("tools/workdir/export.py", ["--input-size", "960y"]),
              ("tools/workdir/visualize.py", ["--jobs", "0"]),
              ("tools/make_synthetic_dataset.py", ["--no-such-flag"]),
              ("tools/choose_input_size.py", ["--sizes"])]


@pytest.mark.parametrize("tool,argv", BAD_VALUES, ids=[os.path.basename(t) for t, _ in BAD_VALUES])
def test_bad_value_is_one_line(tool, argv, capsys):
    """A value argparse refuses: exactly one line ``PROG: error: MESSAGE (see PROG --help)``, exit code 2
    (argparse's own error prints the whole usage block first)."""
    module = load(tool)
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and not captured.out, captured
    prog = os.path.basename(sys.argv[0])
    assert lines[0].startswith(f"{prog}: error: ") and lines[0].endswith(f"(see {prog} --help)"), lines[0]
    assert "usage:" not in lines[0]


def test_compress_help_names_each_default(capsys):
    """--epochs and --base-learning-rate of compress.py each name their own key of the compression config."""
    with pytest.raises(SystemExit):
        load("tools/workdir/compress.py").main(["--help"])
    text = " ".join(capsys.readouterr().out.split()).split("--help", 1)[1]  # the options, after the usage
    epochs = text.split("--epochs EPOCHS", 1)[1].split("--batch-size", 1)[0]
    lr = text.split("--base-learning-rate BASE_LEARNING_RATE", 1)[1].split("--gpu-num", 1)[0]
    assert "total_epochs" in epochs and "optimizer.lr" not in epochs, epochs
    assert "optimizer.lr" in lr and "total_epochs" not in lr, lr


@pytest.mark.slow
def test_range_error_subprocess_one_line(work_dir_0200):
    """Subprocess, as the README shows it: train.py --epochs 0 is one line naming train.py, exit code 2."""
    r = run_tool([str(work_dir_0200 / "train.py"), "--train-ann-files", "a.json", "--save-checkpoints-to",
                  str(work_dir_0200 / "out"), "--epochs", "0"])
    assert r.returncode == 2, r
    assert r.stderr.strip() == ("train.py: error: argument --epochs: '0': must be a positive integer (1 or more) "
                                "(see train.py --help)"), r.stderr


def test_benchmark_flags_have_help():
    """Every flag of benchmarks/*.py has a help text (read from the source: their main() parses sys.argv and
    imports OpenVINO / NNCF first)."""
    import ast
    import glob
    missing = []
    for path in sorted(glob.glob(os.path.join(REPO, "benchmarks", "*.py"))):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                if not any(k.arg == "help" for k in node.keywords):
                    missing.append(f"{os.path.basename(path)}:{node.lineno}")
    assert len(glob.glob(os.path.join(REPO, "benchmarks", "*.py"))) > 5
    assert not missing, f"flags without help: {missing}"
