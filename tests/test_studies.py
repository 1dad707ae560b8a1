"""The study model (app/studies.py): the tests change the model and assert that every view followed it — the
Studies list, the canvas and its overlays, the tags, the findings panel, the batch's progress."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from inference.config import ModelKind
from inference.models.findings import WORKSTATION, Detection, Findings, Mode, ModelRun
from viewer.display import render_8bit
from viewer.loader import load_radiograph

from test_main_window import store, window  # noqa: F401  (fixtures)

CHEST, OTHER = "dicom/DX_chest_966_fixed.dcm", "dicom/CR-MONO1-10-chest"


def _findings(path: str) -> Findings:
    return Findings(path, (Detection("opacity", 0.9, (100, 100, 400, 400)), Detection("opacity", 0.6, (5, 5, 50, 50))),
                    {"Effusion": 0.7, "Mass": 0.2}, {ModelKind.DETECTOR: ModelRun("demo", 32),
                                                     ModelKind.CLASSIFIER: ModelRun("demo", 10)}, Mode.LOCAL)


def _two_studies(window, shared_cxr):
    """The window's study model with two studies added (none shown yet)."""
    chest, other = (load_radiograph(shared_cxr / name) for name in (CHEST, OTHER))
    window.studies.add(chest)
    window.studies.add(other)
    return window.studies, chest, other


def test_views_follow_the_studies_added_shown_and_removed(qtbot, window, shared_cxr):
    model, chest, other = _two_studies(window, shared_cxr)
    assert window.study_list.paths and set(window.study_list.paths) == {chest.path, other.path}
    assert window.canvas.displayed_image() is None  # added, not shown yet

    model.show(other.path)
    assert window.current == other.path
    assert np.array_equal(window.canvas.displayed_image(), render_8bit(other))
    assert window.tag_browser.tree.topLevelItemCount() > 10
    assert other.path.endswith(window.windowTitle().split(" · ")[-1])
    assert window.study_list.currentItem().data(0, 0x0100) == other.path  # the list marks the study shown

    model.remove(other.path, then=chest.path)
    assert window.study_list.paths == [chest.path] and window.current == chest.path
    assert np.array_equal(window.canvas.displayed_image(), render_8bit(chest))
    model.remove(chest.path)
    assert not window.study_list.paths and window.current is None
    assert window.canvas.displayed_image() is None and window.windowTitle() == "MedEdge Viewer"


def test_views_follow_findings_and_status(qtbot, window, shared_cxr):
    model, chest, other = _two_studies(window, shared_cxr)
    model.show(chest.path)

    model.set_findings(other.path, _findings(other.path))  # not the study shown: the canvas stays as it is
    assert window.canvas.visible_box_count() == 0 and not window.findings_panel.rows
    assert window.study_list.status(other.path) == "analysed here"
    split = replace(_findings(other.path), mode=Mode.DISTRIBUTED, ran_on=(WORKSTATION, "10.1.2.3:8001"))
    model.set_findings(other.path, split)  # where it ran, in a few words: the row is narrow
    assert window.study_list.status(other.path) == "analysed here + 10.1.2.3:8001"

    model.set_findings(chest.path, _findings(chest.path))
    assert window.canvas.visible_box_count() == 2  # both above the default confidence, 0.40
    assert set(window.findings_panel.rows) == {"Effusion", "Mass"} and window.findings_panel.findings.path == chest.path
    model.show(other.path)  # the other study's findings come with it
    assert window.findings_panel.findings.path == other.path

    model.set_status(chest.path, "analysing…")
    assert window.study_list.status(chest.path) == "analysing…"
    assert not model.set_findings("/nowhere.dcm", _findings("/nowhere.dcm"))  # closed meanwhile: dropped


def test_progress_follows_the_batch(qtbot, window, shared_cxr):
    model, chest, other = _two_studies(window, shared_cxr)
    model.begin_batch([chest.path, other.path])
    assert [window.study_list.status(p) for p in (chest.path, other.path)] == ["queued", "queued"]
    assert window.progress.isVisible() and (window.progress.value(), window.progress.maximum()) == (0, 2)

    model.batch_study_began(chest.path)
    assert window.study_list.status(chest.path) == "analysing"
    model.batch_study_ended(chest.path, "done: local")
    assert window.progress.value() == 1 and window.study_list.status(chest.path) == "done: local"
    model.batch_study_ended(chest.path, "done: local")  # (a single analysis of it later: not the batch's)
    assert window.progress.value() == 1

    model.remove(other.path)  # closed while queued: the batch no longer waits for it
    assert window.progress.maximum() == 1
    model.end_batch(cancelled=False, reason="")
    assert "Analyze all finished: 1 of 1 analysed" in window.statusBar().currentMessage()
    assert window.progress.maximum() == 0 and model.batch is None


def test_a_batch_cut_short_marks_what_is_left(qtbot, window, shared_cxr):
    model, chest, other = _two_studies(window, shared_cxr)
    model.begin_batch([chest.path, other.path])
    model.batch_study_ended(chest.path, failure="unreadable")
    model.end_batch(cancelled=False, reason="the edge refused the series")
    assert window.study_list.status(other.path) == "failed: the edge refused the series"
    assert "Analyze all stopped: 0 of 2 analysed, 1 failed (the edge refused the series)" in \
        window.statusBar().currentMessage()
