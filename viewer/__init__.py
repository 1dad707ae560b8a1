"""Reading radiographs and the display pipeline; Qt lives only in viewer.widgets."""
