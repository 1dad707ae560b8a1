"""The image canvas: shows a `Radiograph` through the display pipeline on a pyqtgraph view."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from viewer.display import render_8bit
from viewer.radiograph import Radiograph


class RadiographCanvas(pg.GraphicsLayoutWidget):
    """Zoom (wheel) and pan (drag) come from the ViewBox; pixels come from `render_8bit`."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setBackground("k")
        self.view = self.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image_item)
        self.radiograph: Radiograph | None = None

    def show_radiograph(self, radiograph: Radiograph) -> None:
        self.radiograph = radiograph
        self.image_item.setImage(render_8bit(radiograph), levels=(0, 255), autoLevels=False)
        self.view.autoRange(padding=0)

    def displayed_image(self) -> np.ndarray | None:
        return self.image_item.image
