"""Figures (viz.py): grids, the schedule plot and the forward strip, checked as images."""

import numpy as np
import torch
from PIL import Image

from ddpmlab.viz import save_grid, schedules_figure, to_uint8


def test_to_uint8_maps_the_data_range_exactly():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
    assert to_uint8(x).reshape(-1).tolist() == [0, 128, 255, 255]


def test_grid_has_one_cell_per_image_in_rows_of_nrow(tmp_path):
    x = torch.linspace(-1, 1, 6).view(6, 1, 1, 1).expand(6, 1, 8, 8)
    save_grid(x, tmp_path / "g.png", nrow=3)
    with Image.open(tmp_path / "g.png") as im:
        a = np.asarray(im.convert("L"))
    assert a.shape == (2 * 10 + 2, 3 * 10 + 2)  # 2 rows x 3 columns of 8 px cells, torchvision's padding of 2
    assert a[2 + 4, 2 + 4] < a[12 + 4, 22 + 4]  # the first image is the darkest, the last the brightest


def test_schedules_figure_is_a_drawn_png(tmp_path):
    schedules_figure(100, tmp_path / "s.png")
    with Image.open(tmp_path / "s.png") as im:
        a = np.asarray(im.convert("L"))
    assert a.shape[1] > 600 and a.std() > 10  # a wide two-panel figure with curves, not a blank canvas
