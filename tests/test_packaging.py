"""Packaging that fits a cluster: ranges for torch, every imported package declared, extras."""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import re
import sys
import tomllib

from tests.helpers import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports(folder: str) -> set[str]:
    """Top-level modules imported anywhere in ``folder``'s Python files."""
    mods: set[str] = set()
    for path in (REPO / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module.split(".")[0])
    return mods - set(sys.stdlib_module_names) - {"leuk_lightning", "tests", "__future__"}


def test_torch_is_a_range_with_the_known_good_lower_bound():
    deps = {_name(d): d for d in PROJECT["dependencies"]}
    assert deps["torch"].replace(" ", "").startswith("torch>=2.14.1")
    assert deps["torchvision"].replace(" ", "").startswith("torchvision>=0.29.1")
    assert not any("==" in d for d in PROJECT["dependencies"])


def test_every_imported_package_is_declared():
    core = {_name(d) for d in PROJECT["dependencies"]}
    extras = {k: {_name(d) for d in v} for k, v in PROJECT["optional-dependencies"].items()}
    dists = md.packages_distributions()
    # imported lazily by one tool only: module -> the extra that installs it
    optional = {"onnxruntime": "export", "onnx": "export", "onnxscript": "export", "gradio": "app"}
    for module in sorted(_imports("leuk_lightning")):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        assert names, f"{module} is imported but not installed"
        if module in optional:
            extra = optional[module]
            assert names & extras[extra], f"{module}: not in the {extra} extra"
            assert not names & core, f"{module}: optional, but a core dependency"
        else:
            assert names & core, f"{module} ({names}) is imported but not a dependency"
    assert "pandas" not in core  # only the review notebook uses it
    assert "pandas" in extras["notebooks"]
    assert {"onnx", "onnxruntime"} <= extras["export"]
    assert not {"onnx", "onnxruntime"} & extras["dev"] - {"leuk-lightning"}


def test_export_says_how_to_install_the_extra_when_missing(monkeypatch, capsys):
    from leuk_lightning.cli import export as export_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    assert export_cli.main(["--ckpt-path", "absent.ckpt"]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime" in err and 'pip install "leuk-lightning[export]"' in err
