"""The look: a dark theme by default, as reading rooms use (a bright frame around a radiograph dazzles and
shifts how grey levels are seen), and a light one in Settings. Qt's Fusion style with our own palette, so the
viewer looks the same on every desktop and needs no GTK or desktop theme plugin."""

from __future__ import annotations

import enum

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication


class Theme(str, enum.Enum):
    DARK = "dark"
    LIGHT = "light"


_DARK = {
    QPalette.ColorRole.Window: "#2b2b2b", QPalette.ColorRole.WindowText: "#e0e0e0",
    QPalette.ColorRole.Base: "#1e1e1e", QPalette.ColorRole.AlternateBase: "#262626",
    QPalette.ColorRole.ToolTipBase: "#3a3a3a", QPalette.ColorRole.ToolTipText: "#f0f0f0",
    QPalette.ColorRole.PlaceholderText: "#8a8a8a", QPalette.ColorRole.Text: "#e0e0e0",
    QPalette.ColorRole.Button: "#353535", QPalette.ColorRole.ButtonText: "#e0e0e0",
    QPalette.ColorRole.BrightText: "#ff5252", QPalette.ColorRole.Light: "#4a4a4a",
    QPalette.ColorRole.Midlight: "#3e3e3e", QPalette.ColorRole.Mid: "#303030",
    QPalette.ColorRole.Dark: "#1a1a1a", QPalette.ColorRole.Shadow: "#000000",
    QPalette.ColorRole.Highlight: "#2f6fb0", QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#6fa8dc", QPalette.ColorRole.LinkVisited: "#b48ead",
}
_DISABLED = {QPalette.ColorRole.WindowText: "#7a7a7a", QPalette.ColorRole.Text: "#7a7a7a",
             QPalette.ColorRole.ButtonText: "#7a7a7a", QPalette.ColorRole.HighlightedText: "#9a9a9a"}


def apply_theme(app: QApplication, theme: Theme) -> None:
    """Fusion with the dark palette, or Fusion's own light one."""
    app.setStyle("Fusion")
    if theme is Theme.LIGHT:
        app.setPalette(app.style().standardPalette())
        return
    palette = QPalette()
    for role, colour in _DARK.items():
        palette.setColor(QPalette.ColorGroup.All, role, QColor(colour))
    for role, colour in _DISABLED.items():
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(colour))
    app.setPalette(palette)
