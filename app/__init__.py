"""The Qt application: windows, dialogs, workers, command line."""
