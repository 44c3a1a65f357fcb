"""Plots: cell drawings whose operation labels never overlap; the Pareto front as a staircase with a colour bar."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import hwnas.plots
from hwnas.cells.draw import draw_cell
from hwnas.cells.genotype import Genotype
from hwnas.plots import pyplot
from hwnas.strategies.runner import pareto_front, plot_pareto

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cells"


@pytest.mark.parametrize("mode", ["darts", "snas"])
def test_cell_drawing_labels_every_edge_without_overlaps(mode):
    genotype = Genotype.load(DOCS / f"genotype-{mode}.json")  # SNAS nodes take up to 5 inputs
    plt = pyplot()
    for cell in (genotype.normal, genotype.reduce):
        fig, ax = plt.subplots(figsize=(10.5, 3.5))
        draw_cell(ax, cell, mode)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ops = {op for edges in cell for op, _ in edges}
        labels = [t for t in ax.texts if t.get_text() in ops]
        assert len(labels) == sum(len(edges) for edges in cell)
        boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in labels]
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b)
        plt.close(fig)


def test_pareto_plot_draws_the_front_as_steps_with_an_order_colour_bar(monkeypatch, tmp_path):
    records = [{"index": i, "accuracy": acc, "latency_ms": lat, "mflops": 1.0, "choices": []}
               for i, (lat, acc) in enumerate([(0.3, 0.8), (0.2, 0.6), (0.5, 0.9), (0.4, 0.7), (0.25, 0.75)])]
    figures = []
    monkeypatch.setattr(hwnas.plots, "save_figure", lambda fig, path, dpi=110: figures.append(fig) or Path(path))
    plot_pareto(records, tmp_path / "p.png", "ms", budget=0.45)
    [fig] = figures
    main, bar = fig.axes
    assert bar.get_ylabel() == "evaluation"
    [front] = [line for line in main.get_lines() if line.get_drawstyle() == "steps-post"]
    points = [(r["latency_ms"], r["accuracy"]) for r in records]
    expected = [points[i][0] for i in pareto_front(points)]
    assert list(front.get_xdata()) == expected + [0.5]
    pyplot().close(fig)
