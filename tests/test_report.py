"""Issue 6: the report aggregates runs honestly (hand-checked statistics, missing runs named)."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from leuk_lightning.cli import report as report_cli
from leuk_lightning.evaluation import aggregate, records
from leuk_lightning.evaluation import report as R

PAPER = {
    "source": "Genovese et al. (HistoTNet), Table III",
    "accuracy": {"mean": 97.92, "std": 1.62},
    "confusion_matrix": [[49.23, 0.77], [1.31, 48.69]],
}


def write_job(
    job: Path, task: str, overrides: list[str], acc: float | None, cm=None, seed: int = 42
) -> None:
    """A job folder as Hydra + run.py leave it (acc None: the job failed before results)."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": task, "seed": seed}))
    if acc is None:
        (job / f"{task}.log").write_text("[x][leuk][ERROR] - data folder /nope not found\n")
        return
    metrics = {
        "test/acc": acc,
        "test/sensitivity": acc - 0.01,
        "test/specificity": acc + 0.01,
        "test/f1_weighted": acc,
        "test/auroc": 0.99,
        "confusion_matrix": cm or [[60, 5], [5, 60]],
        "class_names": ["normal", "lymphoblast"],
    }
    record = {"task_name": task, "tags": [], "seed": seed, "metrics": metrics, "paper": PAPER}
    (job / "results.json").write_text(json.dumps(record))


def write_sweep(root: Path, task: str, accs: list[float | None], extra: list[str] = ()) -> Path:
    """A 2-repeat x 2-fold multirun; ``accs`` per job number, shorter lists = jobs never run."""
    sweep = root / task / "multiruns" / "2026-01-01_00-00-00"
    sweep.mkdir(parents=True)
    task_overrides = [f"+experiment={task}", "debug=demo", "protocol=histotnet_cv", *extra]
    multirun = {
        "hydra": {
            "overrides": {"task": task_overrides},
            "sweeper": {
                "params": {"data.split.repeat": "range(0,2)", "data.split.fold": "range(0,2)"}
            },
        },
        "task_name": task,
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    for num, acc in enumerate(accs):
        repeat, fold = divmod(num, 2)
        overrides = [f"data.split.repeat={repeat}", f"data.split.fold={fold}", *task_overrides]
        cm = [[60 + num, 5], [4, 61 - num]]
        write_job(sweep / str(num), task, overrides, acc, cm)
    return sweep


def test_mean_std_ci_match_hand_computation_and_missing_runs_are_named(tmp_path, caplog):
    accs = [0.95, 0.97, None]  # job 2 failed, job 3 never ran
    sweep = write_sweep(tmp_path / "logs", "histotnet_resnet18_l2", accs)
    out = tmp_path / "out"
    rep = R.build_report([sweep], out, n_boot=2000, seed=7)
    (row,) = rep["rows"]
    values = [95.0, 97.0]
    acc = row.summaries["test/acc"]
    assert acc.n == 2
    assert acc.mean == pytest.approx(statistics.mean(values))
    assert acc.std == pytest.approx(statistics.stdev(values))
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 2, size=(2000, 2))
    means = np.asarray(values)[idx].mean(axis=1)
    assert (acc.ci_low, acc.ci_high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert 95.0 <= acc.ci_low <= acc.mean <= acc.ci_high <= 97.0
    # average confusion matrix in percent of each run's test set
    cms = [np.array([[60 + n, 5], [4, 61 - n]], float) for n in (0, 1)]
    expected_cm = np.mean([100 * c / c.sum() for c in cms], axis=0)
    assert np.allclose(row.confusion_pct, expected_cm)
    # the failed job and the job that never ran are named, not dropped
    names = {p.name: p for p in rep["problems"]}
    failed = next(p for n, p in names.items() if n.endswith("/2"))
    missing = next(p for n, p in names.items() if n.endswith("/3"))
    assert failed.status == "failed" and "not found" in failed.reason
    assert missing.status == "missing" and "data.split.repeat=1" in missing.overrides
    md = (out / "report.md").read_text()
    assert f"`{failed.name}`" in md and f"`{missing.name}`" in md
    assert "2/4" in md  # 2 of 4 runs in the statistics
    assert "96.00 ± 1.41" in md and "97.92 ± 1.62" in md  # ours beside the paper's
    assert "TN = " in md and "TP = " in md and "TN = 49.23%" in md  # paper's Table IV beside
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert failed.name in warned and missing.name in warned
    with open(out / "report.csv", newline="") as f:
        (line,) = list(csv.DictReader(f))
    assert float(line["acc_mean"]) == pytest.approx(96.0)
    assert float(line["acc_std"]) == pytest.approx(math.sqrt(2))
    assert float(line["acc_paper_mean"]) == pytest.approx(97.92)
    assert line["n_runs"] == "2" and line["n_missing_or_failed"] == "2"
    with open(out / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert sorted(r["status"] for r in runs) == ["failed", "missing", "ok", "ok"]


def test_configurations_grouped_and_wilcoxon_compare(tmp_path, capsys):
    from scipy.stats import wilcoxon

    a = write_sweep(tmp_path / "logs", "histotnet_resnet18_l2", [0.95, 0.97, 0.96, 0.99])
    b = write_sweep(tmp_path / "logs", "imagenet_resnet18_all_idb2", [0.90, 0.91, 0.93, 0.92])
    out = tmp_path / "rep"
    code = report_cli.main(
        [str(a), str(b), "--out", str(out), "--compare", "histotnet_resnet18_l2", str(b)]
    )
    assert code == 0
    assert "Paired comparisons" in capsys.readouterr().out
    (cmp_,) = json.loads((out / "comparisons.json").read_text())
    acc = next(m for m in cmp_["metrics"] if m["metric"] == "Accuracy")
    expected = wilcoxon([95, 97, 96, 99], [90, 91, 93, 92])
    assert cmp_["n_pairs"] == 4 and acc["n"] == 4
    assert acc["p_value"] == pytest.approx(expected.pvalue)
    assert acc["mean_diff"] == pytest.approx(np.mean([5, 6, 3, 7]))
    rows = list(csv.DictReader((out / "report.csv").read_text().splitlines()))
    assert [r["task_name"] for r in rows] == ["histotnet_resnet18_l2", "imagenet_resnet18_all_idb2"]


def test_seed_and_fold_do_not_split_a_configuration_but_other_overrides_do(tmp_path):
    sweep = write_sweep(tmp_path / "logs", "t", [0.9, 0.8, 0.7, 0.6])
    other = write_sweep(tmp_path / "logs2", "t", [0.5, 0.5], extra=["model=test_vit"])
    rows = aggregate.aggregate(records.collect_runs([sweep, other]), n_boot=100)
    assert [len(r.runs) for r in rows] == [4, 2]
    assert "model=test_vit" in rows[1].label and "model=" not in rows[0].label


def test_no_runs_is_one_clear_error(tmp_path, capsys):
    assert report_cli.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "leuk-lightning report: error: report: no runs" in err[0]
    with pytest.raises(Exception, match="not a directory"):
        records.collect_runs([tmp_path / "absent"])


@pytest.mark.slow
def test_report_table_logged_to_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = write_sweep(tmp_path / "logs", "histotnet_resnet18_l2", [0.95, 0.97])
    assert report_cli.main([str(sweep), "--out", str(tmp_path / "out"), "--wandb"]) == 0
    (run_file,) = (tmp_path / "out" / "wandb").rglob("run-*.wandb")
    assert run_file.stat().st_size > 0
