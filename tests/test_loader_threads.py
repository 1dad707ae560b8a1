"""Opening several studies at once on a cold start (the command line, drag-and-drop, Open files, Open folder):
the viewer loads each in its own worker thread, all at the same moment, before anything has imported the
decoding stack. That once raced: `cannot import name 'Dataset' from partially initialized module
'pydicom.dataset'`, and the Studies list stayed empty.

Each fresh interpreter starts one thread per file behind a barrier; each thread imports the loader, loads its
file and renders the thumbnail the Studies list shows, as the viewer's worker does. Repeated in fresh
subprocesses, since a race shows only sometimes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.timeout(600)

RUNS = 6  # before the fix the race showed on the first run

CHILD = """
import json, sys, threading
sys.path.insert(0, sys.argv[1])
paths = sys.argv[2:]
barrier = threading.Barrier(len(paths))
outcome = {}

def open_study(path):
    barrier.wait()  # every thread starts its first import at the same moment
    try:
        from viewer.errors import RadiographError
        from viewer.loader import load_radiograph
        from viewer.display import render_8bit
        try:
            image = render_8bit(load_radiograph(path))
            outcome[path] = ["opened", list(image.shape)]
        except RadiographError as error:
            outcome[path] = ["refused", error.reason]
    except Exception as error:  # anything else is the defect under test
        outcome[path] = ["crashed", f"{type(error).__name__}: {error}"]

threads = [threading.Thread(target=open_study, args=(path,)) for path in paths]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(outcome))
"""


def test_many_threads_open_different_real_files_on_a_cold_interpreter(shared_cxr, tmp_path):
    import cv2

    png = shared_cxr / "raster/txv_nih_00027426_000_512px.png"
    jpeg, tiff = tmp_path / "chest.jpeg", tmp_path / "chest.tiff"
    cv2.imwrite(str(jpeg), cv2.imread(str(png)))
    cv2.imwrite(str(tiff), cv2.imread(str(png), cv2.IMREAD_GRAYSCALE))
    readable = [shared_cxr / "dicom" / name for name in ("DX_chest_966_fixed.dcm", "CR-MONO1-10-chest",
                                                         "RG1_J2KI.dcm", "highdicom_dx_image_canine_thorax.dcm")]
    readable += [shared_cxr / "other" / name for name in ("RG2_JPLL.dcm", "RG2_RLE.dcm")]
    readable += [png, jpeg, tiff]
    unreadable = [shared_cxr / "other/pydicom_test-SR.dcm", tmp_path / "missing.dcm"]
    paths = [str(path) for path in readable + unreadable]
    for run in range(RUNS):
        done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), *paths], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        outcome = json.loads(done.stdout)
        crashed = {path: result for path, result in outcome.items() if result[0] == "crashed"}
        assert not crashed, f"run {run}: {crashed}"
        assert all(outcome[str(path)][0] == "opened" for path in readable), (run, outcome)
        assert outcome[str(unreadable[0])] == ["refused", "no image in this file: it is a structured report "
                                                          "(Comprehensive SR Storage)"]
        assert outcome[str(unreadable[1])] == ["refused", "no such file"]
