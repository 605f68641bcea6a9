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


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        plots.plot_pruning_curves({})
