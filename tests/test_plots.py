"""The figures are written as PNG files with the expected lines."""

import numpy as np
import pytest

from keras_heavytail.experiments import plots

pytest.importorskip("matplotlib", reason="plots need the 'plots' extra")


def test_pruning_curves_png(tmp_path):
    rows = [{"ratio": r, "accuracy": 1 - r} for r in (0.0, 0.5, 0.9)]
    path = tmp_path / "curves.png"
    fig = plots.plot_pruning_curves({"SGD": rows, "HeavyTailSGD": rows}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["SGD", "HeavyTailSGD"]
    np.testing.assert_allclose(lines[0].get_ydata(), [1.0, 0.5, 0.1])


def test_norm_tails_png(tmp_path):
    kernel = np.random.default_rng(0).standard_cauchy((10, 200))
    path = tmp_path / "tails.png"
    fig = plots.plot_norm_tails({"cauchy": kernel}, path)
    assert path.stat().st_size > 1000
    xdata = fig.axes[0].get_lines()[0].get_xdata()
    assert np.all(np.diff(xdata) >= 0) and xdata.size == 200
    # The legend sits below the axes, where no point can be (it covered the
    # largest norms at the lower left).
    fig.canvas.draw()
    legend = fig.axes[0].get_legend().get_window_extent()
    assert legend.y1 < fig.axes[0].get_window_extent().y0


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        plots.plot_pruning_curves({})


def test_sweep_plot_reads_sigma_from_the_row_fields_not_the_label():
    from keras_heavytail.experiments import plots

    def row(setting, noise, alpha, sigma, neurons):
        return {"protocol": "default", "width": 64, "setting": setting, "noise": noise,
                "alpha": alpha, "sigma": sigma, "anneal": False,
                "neurons_at_iso_accuracy": (neurons, 1.0)}  # fmt: skip

    rows = [
        row("SGD", None, 1.75, 0.0, 30),
        row("my favourite", "neuron", 1.75, 0.01, 40),  # a label with no sigma in it
        row("another", "neuron", 1.75, 0.001, 35),
        row("third", "neuron", 1.5, 0.001, 50),
    ]
    figure = plots.plot_sweep(rows)
    (ax,) = figure.axes
    lines = {c.get_label(): c for c in ax.containers}
    assert sorted(lines) == ["neuron, alpha=1.5 (default, width 64)",
                             "neuron, alpha=1.75 (default, width 64)"]  # fmt: skip
    x, y = lines["neuron, alpha=1.75 (default, width 64)"].lines[0].get_data()
    assert list(x) == [0.001, 0.01] and list(y) == [35, 40]
