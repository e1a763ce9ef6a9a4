"""The trainer's pictures: samples from every class, readable curves and confusion matrix."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgb

from trainer import reports


def test_samples_show_every_class_of_a_data_set_sorted_by_class(tmp_path):
    labels = np.repeat(np.arange(5), 100)  # a folder data set: class 0 first, then 1, ...
    chosen = reports.sample_indices(labels, 32)
    assert len(chosen) == 32
    assert set(labels[chosen]) == set(range(5))
    assert np.bincount(labels[chosen]).max() - np.bincount(labels[chosen]).min() <= 1
    assert reports.sample_indices(np.array([0, 0, 1]), 32) == [0, 2, 1]
    images = np.zeros((500, 8, 8, 1), np.uint8)
    reports.save_samples(tmp_path / "samples.png", images, labels, list("abcde"))
    assert (tmp_path / "samples.png").stat().st_size > 0


def test_curves_of_one_epoch_are_labelled_points_on_a_whole_epoch_tick():
    history = {"loss": [0.3], "accuracy": [0.91], "val_loss": [0.2], "val_accuracy": [0.94]}
    figure = reports.curves_figure(history)
    for axis in figure.axes:
        assert list(axis.get_xticks()) == [1]
        labels = {text.get_text() for text in axis.texts}
        assert len(labels) == 2  # train and validation values written beside their points
        assert "1 epoch" in axis.get_title()
    accuracy_labels = {text.get_text() for text in figure.axes[0].texts}
    assert accuracy_labels == {"0.9100", "0.9400"}


def test_confusion_matrix_has_a_colour_bar_readable_counts_and_names_its_split():
    matrix = np.array([[90, 10, 0], [5, 5, 0], [0, 0, 1]])
    figure = reports.confusion_figure(matrix, ["a", "b", "c"], split="test")
    heat, bar = figure.axes  # the colour bar is an axis of its own
    assert "share of the true class" in bar.get_ylabel()
    assert "test split" in heat.get_title() and "111 images" in heat.get_title()
    cells = {text.get_text(): text for text in heat.texts}
    assert set(cells) == {"90", "10", "5", "1"}  # empty cells stay empty
    assert all(text.get_fontsize() >= 10 for text in cells.values())
    # Colour follows the share of the row: 90 of 100 is dark (white text), 10 of 100 light
    # (black text); 5 of 10 is half, still light; the single image of class c is all of it.
    assert to_rgb(cells["90"].get_color()) == (1.0, 1.0, 1.0)
    assert to_rgb(cells["10"].get_color()) == (0.0, 0.0, 0.0)
    assert to_rgb(cells["5"].get_color()) == (0.0, 0.0, 0.0)
    assert to_rgb(cells["1"].get_color()) == (1.0, 1.0, 1.0)
