"""The one error type the loader raises: a one-line reason a person can act on."""


class RadiographError(ValueError):
    """A file could not be read as a radiograph.

    ``str(error)`` is always a single line that names the problem (and, where
    it helps, what to install or check); the path is kept separately.
    """

    def __init__(self, reason: str, path: str | None = None) -> None:
        reason = " ".join(str(reason).split())  # one line, always
        super().__init__(reason)
        self.reason = reason
        self.path = path
