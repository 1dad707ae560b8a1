"""Application settings: one validated value, persisted with QSettings.

Every field is checked when the value is built (so a bad value never reaches the models or the
network) and again when read back from disk; what cannot be read falls back to the default, with the
reason kept for the status bar.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from PySide6.QtCore import QSettings

from app.theme import Theme
from inference.config import Device, ModelKind, Runtime, SplitMode, SplitPolicy, WireFormat
from inference.edge.client import EdgeSettings, parse_address
from pacs.nodes import PacsTls, checked_ae_title
from pacs.remote import PacsNode, parse_node

ORGANISATION, APPLICATION = "MedEdge", "MedEdge Viewer"


@dataclass(frozen=True)
class AppSettings:
    edge_addresses: tuple[str, ...] = ()      # host:port of Triton gRPC endpoints: load spread, fail-over
    tls: bool = False
    ca_file: str = ""                         # PEM of the CA that signed the edge certificate
    client_certificate_file: str = ""         # mutual TLS: this workstation's certificate (PEM) …
    client_key_file: str = ""                 # … and its private key
    timeout_s: float = 10.0
    split_mode: SplitMode = SplitMode.AUTO
    detector_cut: int = 6                     # used when split_mode is MANUAL
    classifier_cut: int = 7
    wire: WireFormat = WireFormat.FP32
    device: Device = Device()
    # Local whole-model runtime. The GUI starts with torch: preparing the ONNX Runtime model (export +
    # check, once) holds the interpreter long enough to stutter the window.
    runtime: Runtime = Runtime.TORCH
    detector_weights: str = ""                # empty: demo weights
    classifier_weights: str = ""
    confidence: float = 0.4                   # boxes shown at or above this score
    finding_thresholds: dict[str, float] = field(default_factory=dict)  # finding → positive at or above
    auto_analyze: bool = False
    recent_files: tuple[str, ...] = ()
    export_folder: str = ""                   # where the last view or DICOM SR was exported: the next starts there
    theme: Theme = Theme.DARK                 # reading-room dark by default; light on request
    pacs_nodes: tuple[str, ...] = ()          # AET@host:port or https://… DICOMweb; the first is the default
    ae_title: str = "MEDEDGE"                 # this workstation's AE title towards them
    move_port: int = 0                        # DIMSE retrieves by C-MOVE to this port; 0: by C-GET
    pacs_ca_file: str = ""                    # PEM of the CA that signed the PACS nodes' (DICOM TLS, HTTPS)
    pacs_certificate_file: str = ""           # this workstation's, for nodes that ask and C-MOVE over TLS …
    pacs_key_file: str = ""                   # … and its key
    send_annotated_image: bool = False        # Send results to PACS: the annotated view beside the SR

    def __post_init__(self) -> None:
        # the dialog's combo boxes and older stored settings hand over text: typed here, with the reason if not
        for name, kind in (("split_mode", SplitMode), ("wire", WireFormat), ("runtime", Runtime), ("theme", Theme)):
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                choices = ", ".join(choice.value for choice in kind)
                raise ValueError(f"{name.replace('_', ' ')} must be one of {choices}, "
                                 f"got {getattr(self, name)!r}") from None
        object.__setattr__(self, "device", Device.parse(self.device))
        for address in self.edge_addresses:
            parse_address(address)  # ValueError with the reason
        if self.tls and self.ca_file and not Path(self.ca_file).is_file():
            raise ValueError(f"CA file not found: {self.ca_file}")
        if bool(self.client_certificate_file) != bool(self.client_key_file):
            raise ValueError("mutual TLS needs both the client certificate and its key")
        if self.client_certificate_file and not self.tls:
            raise ValueError("a client certificate is for TLS: turn TLS on")
        for what, path in (("client certificate", self.client_certificate_file), ("client key", self.client_key_file)):
            if path and not Path(path).is_file():
                raise ValueError(f"{what} file not found: {path}")
        if not 0.1 <= self.timeout_s <= 600:
            raise ValueError(f"request timeout must lie in 0.1..600 s, got {self.timeout_s}")
        for name, path in (("detector", self.detector_weights), ("classifier", self.classifier_weights)):
            if path and not Path(path).is_file():
                raise ValueError(f"{name} weights file not found: {path}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")
        for name, value in self.finding_thresholds.items():
            if not 0 <= value <= 1:
                raise ValueError(f"threshold of {name} must lie in [0, 1], got {value}")
        for node in self.pacs_nodes:
            parse_node(node, self.pacs_tls)  # ValueError with the reason
        self.pacs_tls  # noqa: B018  (ValueError with the reason)
        checked_ae_title(self.ae_title, "this workstation's AE title")
        if not 0 <= self.move_port <= 65535:
            raise ValueError(f"C-MOVE port must lie in 1..65535 (0: retrieve by C-GET), got {self.move_port}")
        if self.detector_cut < 0 or self.classifier_cut < 0:
            raise ValueError("cuts are never negative")

    @property
    def edges(self) -> list[EdgeSettings]:
        """Every configured edge, preferred first; empty when analysis is local only."""
        if self.split_mode is SplitMode.LOCAL:
            return []
        return EdgeSettings.each(self.edge_addresses, self.tls, self.ca_file, self.client_certificate_file,
                                 self.client_key_file, self.timeout_s)

    @property
    def edge(self) -> EdgeSettings | None:
        """The preferred edge, or None when analysis is local only."""
        return next(iter(self.edges), None)

    @property
    def split(self) -> SplitPolicy:
        """Where the models are cut: every stage here while no edge is configured."""
        if self.edge is None:
            return SplitPolicy(SplitMode.LOCAL)
        if self.split_mode is SplitMode.MANUAL:
            return SplitPolicy(SplitMode.MANUAL, {ModelKind.DETECTOR: self.detector_cut,
                                                  ModelKind.CLASSIFIER: self.classifier_cut})
        return SplitPolicy(self.split_mode)

    @property
    def pacs_tls(self) -> PacsTls:
        """The TLS files for the PACS nodes; ValueError when one is missing or the key lacks its certificate."""
        return PacsTls(self.pacs_ca_file, self.pacs_certificate_file, self.pacs_key_file)

    @property
    def pacs(self) -> list[PacsNode]:
        """The PACS nodes (DIMSE or DICOMweb), the default first."""
        return [parse_node(node, self.pacs_tls) for node in self.pacs_nodes]

    def with_recent(self, path: str, keep: int = 10) -> AppSettings:
        recent = (path,) + tuple(p for p in self.recent_files if p != path)
        return replace(self, recent_files=recent[:keep])


def settings_store(store: QSettings | None) -> QSettings:
    """`store`, or the user's own QSettings (the tests pass a file of their own)."""
    return store if store is not None else QSettings(ORGANISATION, APPLICATION)


def save_settings(settings: AppSettings, store: QSettings | None = None) -> None:
    store = settings_store(store)
    for key, value in ((spec.name, getattr(settings, spec.name)) for spec in fields(settings)):
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, Device):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):
            value = {k: float(v) for k, v in value.items()}
        store.setValue(key, value)
    store.sync()


def load_settings(store: QSettings | None = None) -> tuple[AppSettings, str | None]:
    """The stored settings, validated; on a bad stored value the defaults and the reason."""
    store = settings_store(store)
    defaults = AppSettings()
    values = {}
    for spec in fields(AppSettings):
        if not store.contains(spec.name):
            continue
        raw = store.value(spec.name)
        default = getattr(defaults, spec.name)
        try:
            values[spec.name] = _coerce(raw, default)
        except (TypeError, ValueError):
            return defaults, f"setting {spec.name} unreadable ({raw!r}): defaults used"
    try:
        return AppSettings(**values), None
    except ValueError as exc:
        return defaults, f"stored settings invalid ({exc}): defaults used"


def _coerce(raw, default):
    """QSettings hands back strings on some platforms: turn `raw` into the type of `default`."""
    if isinstance(default, enum.Enum):
        return type(default)(raw)
    if isinstance(default, Device):
        return Device.parse(str(raw))
    if isinstance(default, bool):
        return raw if isinstance(raw, bool) else str(raw).lower() in ("true", "1", "yes")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, tuple):
        if raw in (None, ""):
            return ()
        return tuple(str(v) for v in (raw if isinstance(raw, list) else [raw]))
    if isinstance(default, dict):
        return {str(k): float(v) for k, v in dict(raw or {}).items()}
    return "" if raw is None else str(raw)
