"""A searchable tree of the DICOM header: tag, name, VR, value; sequences fold out."""

from __future__ import annotations

import warnings

from PySide6.QtWidgets import QHeaderView, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

MAX_VALUE_CHARS = 200


NAME_WIDTH = 120  # px: most keywords whole (a longer one's tooltip has it); the value keeps the rest


class TagBrowser(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search tag, name or value…")
        self.search.textChanged.connect(self._filter)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Tag", "Name", "VR", "Value"])
        self.tree.setUniformRowHeights(True)
        # the tag as wide as its text, so "(0002,0001)" is never cut off in a narrow dock; the value takes the rest
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)  # two letters, not 100 px
        self.tree.header().setStretchLastSection(True)
        layout.addWidget(self.search)
        layout.addWidget(self.tree)

    def clear(self) -> None:
        self.tree.clear()

    def show_header(self, header) -> None:
        self.tree.clear()
        if header is None:
            self.tree.addTopLevelItem(QTreeWidgetItem(["", "(not a DICOM file)", "", ""]))
            return
        with warnings.catch_warnings():  # values shown as the file has them: pydicom's complaints (a 56-character
            warnings.simplefilter("ignore")  # SH…) would only reach the terminal; the loader's notes say what matters
            if getattr(header, "file_meta", None) is not None:
                self._add(header.file_meta, self.tree.invisibleRootItem())
            self._add(header, self.tree.invisibleRootItem())
        # the name as wide as it needs up to a limit: the value kept three or four characters in a narrow panel
        self.tree.resizeColumnToContents(1)
        self.tree.setColumnWidth(1, min(self.tree.columnWidth(1), NAME_WIDTH))
        self._filter(self.search.text())

    def _add(self, dataset, parent: QTreeWidgetItem) -> None:
        for element in dataset:
            try:
                value = "" if element.VR == "SQ" else _shown_value(element.value)
            except Exception:  # a damaged element must not hide the others
                value = "(unreadable value)"
            item = QTreeWidgetItem([f"({element.tag.group:04X},{element.tag.element:04X})",
                                    element.keyword or element.name, str(element.VR), value])
            item.setToolTip(1, element.name)
            if value:
                item.setToolTip(3, value)  # whole, where the column cuts it
            parent.addChild(item)
            if element.VR == "SQ":
                for number, child in enumerate(element.value or []):
                    entry = QTreeWidgetItem(["", f"Item {number + 1}", "", ""])
                    item.addChild(entry)
                    self._add(child, entry)

    def _filter(self, text: str) -> None:
        needle = text.strip().lower()

        def visit(item: QTreeWidgetItem) -> bool:
            own = not needle or any(needle in item.text(c).lower() for c in range(4))
            children = [visit(child) for i in range(item.childCount()) if (child := item.child(i)) is not None]
            shown = own or any(children)
            item.setHidden(not shown)
            if needle and any(children):
                item.setExpanded(True)
            return shown

        root = self.tree.invisibleRootItem()
        for index in range(root.childCount()):
            if (child := root.child(index)) is not None:
                visit(child)

    def visible_rows(self) -> list[str]:
        rows = []
        root = self.tree.invisibleRootItem()
        for index in range(root.childCount()):
            item = root.child(index)
            if item is not None and not item.isHidden():
                rows.append(item.text(1))
        return rows


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 1] + "…"


def _shown_value(value) -> str:
    # OB, OW, OF, UN… arrive as bytes: a reader can use their size, not their bytes
    if isinstance(value, (bytes, bytearray)):
        return _binary_size(len(value))
    return _short("" if value is None else str(value))


def _binary_size(size: int) -> str:
    if size < 1024:
        return f"{size} byte{'' if size == 1 else 's'}"
    if size < 1024 * 1024:
        return f"binary data, {size / 1024:.1f} KiB"
    return f"binary data, {size / (1024 * 1024):.1f} MiB"
