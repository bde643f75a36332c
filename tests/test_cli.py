"""The ``leuk-lightning`` command: every subcommand explains itself, typos never pass silently,
``eval`` reproduces a run's own test figures, and the package has no import circles."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

from leuk_lightning.cli import COMMANDS, main
from tests.helpers import REPO, run_app

TOOLS = [name for name in COMMANDS if name != "train"]
# one option of each tool, misspelt, and what the suggestion must name
TYPOS = {
    "eval": ("ckpt_pth=x", "ckpt_path"),
    "predict": ("inptu=cells/", "input"),
    "export": ("--opst=18", "--opset"),
    "detect": ("score_treshold=0.3", "score_threshold"),
    "explain": ("methd=tsne", "method"),
    "report": ("--n-bot=5", "--n-boot"),
    "select": ("--metrc=val/acc", "--metric"),
    "cnmc-to-voc": ("per_clas=150", "per_class"),
    "app": ("--prot=8080", "--port"),
}


def _parser(name: str):
    return importlib.import_module(f"leuk_lightning.cli.{COMMANDS[name][0]}").build_parser()


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_prints_usage_defaults_and_two_examples(name, capsys):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: leuk-lightning {name}")
    examples = out.split("examples:\n", 1)[1].strip().splitlines()
    assert len(examples) == 2 and all(
        e.strip().startswith(f"leuk-lightning {name}") for e in examples
    )
    parser = _parser(name)
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in out, opt
        if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
            flat = " ".join(out.split())  # help text is wrapped at the terminal width
            assert f"(default: {action.default})" in flat, action.dest  # every default shown


@pytest.mark.parametrize("name", TOOLS)
def test_a_typo_exits_2_with_a_suggestion(name, capsys):
    typo, meant = TYPOS[name]
    assert main([name, typo]) == 2
    err = capsys.readouterr().err
    assert f"did you mean '{meant}'?" in err


def test_key_value_and_flag_spellings_parse_the_same():
    parser = _parser("detect")
    a = parser.parse_args(["ckpt_path=r/x.ckpt", "input=0", "annotate=true", "max_frames=5"])
    b = parser.parse_args(
        ["--ckpt-path", "r/x.ckpt", "--input", "0", "--annotate", "--max-frames=5"]
    )
    assert vars(a) == vars(b) and a.max_frames == 5 and a.annotate is True
    assert parser.parse_args(["ckpt_path=x", "input=0", "annotate=false"]).annotate is False
    explain = _parser("explain").parse_args(["ckpt_path=x", "paths.data_dir=/d", "n_images=2"])
    assert explain.overrides == ["paths.data_dir=/d"] and explain.n_images == 2


def test_unknown_command_suggests_the_nearest(capsys):
    assert main(["predcit", "input=x"]) == 2
    assert "did you mean 'predict'?" in capsys.readouterr().err


def test_train_help_is_the_projects_page():
    for args in (["--help"], ["train", "--help"]):
        proc = run_app(args, REPO)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert out.startswith("leuk-lightning: reproduce, compare and extend")
        assert "powered by Hydra" not in out.split("\n")[0]
        for name in COMMANDS:
            assert f"  {name} " in out
        experiments = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
        for name in experiments:
            assert f"\n  {name} " in out, name
        assert out.count("leuk-lightning +experiment") + out.count("leuk-lightning -m") >= 3


@pytest.mark.slow
def test_eval_reproduces_the_runs_own_test_figures(tmp_path, demo_data):
    args = ["debug=demo", "model=test_resnet", "trainer.max_epochs=2"]
    args += ["+trainer.limit_train_batches=3", "task_name=cli_eval"]
    proc = run_app(args, tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "cli_eval" / "runs").iterdir()
    trained = json.loads((run_dir / "results.json").read_text())["metrics"]
    out = tmp_path / "evaluated"
    ckpt = trained["best_checkpoint"]
    proc = run_app(["eval", f"ckpt_path={ckpt}", f"out_dir={out}"], tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tested = json.loads((out / "results.json").read_text())["metrics"]
    for key in ("test/acc", "test/auroc", "test/f1_weighted"):
        assert tested[key] == pytest.approx(trained[key], abs=1e-6), key
    assert tested["confusion_matrix"] == trained["confusion_matrix"]
    assert json.loads((run_dir / "results.json").read_text())["metrics"] == trained  # untouched
    bad = run_app(["eval", f"ckpt_path={ckpt}", "data.batch_sise=4"], tmp_path, demo_data)
    assert bad.returncode == 2 and "did you mean 'data.batch_size'?" in bad.stderr


def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports at module level or inside functions."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] == package}


def test_no_module_imports_a_module_that_imports_it_back():
    root = REPO / "leuk_lightning"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {
        m: {i for i in _imports(p, "leuk_lightning") if i in modules} - {m}
        for m, p in modules.items()
    }
    # the package itself (leuk_lightning/__init__) is imported for its resolvers by many: skip it
    graph = {m: deps - {"leuk_lightning"} for m, deps in graph.items()}
    cycles = []
    for a, deps in graph.items():
        for b in deps:
            if a in _reachable(graph, b):
                cycles.append((a, b))
    assert not cycles, cycles


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
