"""The viewer on a real X server, started with `make run ARGS="FILES"` as a user starts it, with DISPLAY set and
Qt's xcb platform (no offscreen), on a 1366 × 768 Xvfb screen.

Several real radiographs are opened at once from the command line; Analyze is pressed by a mouse click on the
toolbar button (an X event from xdotool); the screen read back from the X server must show the studies, the
radiograph and the 14 findings. A library the xcb platform needs that is missing, or a broken platform plugin,
stops the viewer before it shows a window: this test then fails (the second test shows it does).
The same on a Wayland desktop without XWayland: the viewer a native Wayland client of a real compositor (Weston).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from x11 import drive_viewer, start_xvfb

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def xserver():
    server = start_xvfb()
    yield server
    server.stop()


def test_make_run_shows_the_studies_and_analyze_on_the_toolbar_shows_the_findings(xserver, shared_cxr, tmp_path):
    """`make run ARGS="FILES"` as a user types it, with three real radiographs at once."""
    studies = [shared_cxr / "dicom/DX_chest_966_fixed.dcm", shared_cxr / "dicom/CR-MONO1-10-chest",
               shared_cxr / "raster/txv_nih_00027426_000_512px.png"]
    assert not any(" " in str(path) for path in studies)  # ARGS is split on spaces by make
    drive_viewer(xserver, ["make", "--no-print-directory", "run", f"ARGS={' '.join(map(str, studies))}"],
                 studies, tmp_path / "home", tmp_path, cwd=ROOT)


def test_a_missing_library_of_the_xcb_platform_stops_the_viewer_before_any_window(xserver, tmp_path):
    """What a machine without libxcb-icccm4 did (issue 18): here the library is shadowed by an empty file."""
    shadow = tmp_path / "lib"
    shadow.mkdir()
    (shadow / "libxcb-icccm.so.4").write_bytes(b"")
    env = xserver.env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"), LD_LIBRARY_PATH=str(shadow))
    done = subprocess.run([sys.executable, str(ROOT / "main.py")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert 'Could not load the Qt platform plugin "xcb"' in done.stderr, done.stderr[-2000:]
    with pytest.raises(TimeoutError):
        xserver.window("MedEdge Viewer", timeout_s=2)


def test_on_a_wayland_desktop_the_viewer_runs_as_a_native_wayland_client(xserver, shared_cxr, tmp_path):
    """A Wayland session without XWayland (no DISPLAY): Qt's wayland platform, under a real compositor (Weston);
    the studies open, Analyze is clicked through the compositor, the findings show."""
    from x11 import start_weston

    studies = [shared_cxr / "raster/txv_nih_00027426_000_512px.png", shared_cxr / "dicom/DX_chest_966_fixed.dcm"]
    session = start_weston(xserver)
    try:
        drive_viewer(session, [sys.executable, str(ROOT / "main.py"), *map(str, studies)], studies,
                     tmp_path / "home", tmp_path, cwd=ROOT)
    finally:
        session.stop()
