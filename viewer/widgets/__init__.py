"""Qt widgets of the viewer (the only Qt code in viewer/)."""
