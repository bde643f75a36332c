"""The confusion-matrix figure: readable text on every cell, a title, counts and %, and the
paper's matrix beside ours where the experiment states one."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import to_rgba

from leuk_lightning.utils.printing import confusion_matrix_figure, save_confusion_matrix

NAMES = ["normal", "lymphoblast"]
CM = torch.tensor([[60, 5], [2, 63]])
PAPER = [[49.23, 0.77], [1.31, 48.69]]


def _luminance(color) -> float:
    r, g, b, _ = to_rgba(color)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_text_contrasts_with_its_cell_counts_and_percent():
    fig = confusion_matrix_figure(CM, NAMES, title="histotnet: test", paper=PAPER)
    ours, paper = fig.axes[0], fig.axes[1]
    for ax in (ours, paper):
        image = ax.get_images()[0]
        values = image.get_array()
        for text in ax.texts:
            i, j = round(text.get_position()[1]), round(text.get_position()[0])
            cell = image.cmap(image.norm(values[i, j]))
            # at least 0.4 luminance apart: readable on navy diagonal and on white off-diagonal
            assert abs(_luminance(text.get_color()) - _luminance(cell)) > 0.4, text.get_text()
    texts = {t.get_text() for t in ours.texts}
    assert "63\n48.5%" in texts and "5\n3.8%" in texts
    assert {t.get_text() for t in paper.texts} >= {"49.23%", "0.77%"}
    assert ours.get_title() == "histotnet: test (n=130)" and "Paper" in paper.get_title()
    plt.close(fig)


def test_paper_panel_only_when_the_shapes_match(tmp_path):
    fig = confusion_matrix_figure(CM, NAMES, paper=None)
    assert len(fig.axes) == 1
    plt.close(fig)
    fig = confusion_matrix_figure(CM, NAMES, paper=[[1.0, 2.0, 3.0]])
    assert len(fig.axes) == 1
    plt.close(fig)
    text = save_confusion_matrix(CM, NAMES, tmp_path / "cm.png", paper=PAPER)
    assert (tmp_path / "cm.png").stat().st_size > 0 and "lymphoblast" in text
