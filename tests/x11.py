"""A real X server for the tests: Xvfb started and stopped by the test, input sent with xdotool, the screen read
back from the X server with xwd (never QWidget.grab: what the test checks is what a user would see). A real Wayland
compositor too: Weston, in a window filling that X server's screen, with the viewer as its native Wayland client.

Debian packages: xvfb, xdotool, x11-apps, weston (`make test` installs them, packaging/linux-sysdeps.sh).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCREEN = (1366, 768)  # a common small laptop screen: the window must fit it with nothing cut off
FINDING_BARS = ((0xD3, 0x2F, 0x2F), (0x60, 0x7D, 0x8B))  # positive and negative probability bars (findings_panel)


@dataclass
class XServer:
    display: str
    process: subprocess.Popen

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment pointed at the X server, without the offscreen platform the other
        tests use: Qt then starts with xcb, as `make run` does on a desktop."""
        env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
        return {**env, "DISPLAY": self.display, **extra}

    def run(self, *command: str, timeout: float = 30) -> str:
        done = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
        return done.stdout

    def screenshot(self) -> np.ndarray:
        """The whole screen as the X server has it, RGB."""
        done = subprocess.run(["xwd", "-root", "-silent"], env=self.env(), capture_output=True, timeout=30, check=True)
        return read_xwd(done.stdout)

    def window(self, name: str, timeout_s: float) -> str:
        """The id of a visible window whose title contains `name`, waiting for it to appear."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", name], env=self.env(),
                                   capture_output=True, text=True, timeout=30).stdout.split()
            if found:
                return found[0]
            time.sleep(0.25)
        raise TimeoutError(f"no window named {name!r} appeared on {self.display} within {timeout_s:.0f} s")

    def click(self, x: int, y: int) -> None:
        """A real button press and release at screen position (x, y)."""
        self.run("xdotool", "mousemove", "--sync", str(x), str(y), "click", "1")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@dataclass
class WaylandSession:
    """Weston on `xserver` (its X11 back end: one window, at the screen's size) with its kiosk shell, which shows
    the one application fullscreen as a Wayland desktop shows a maximised window. The viewer is a native Wayland
    client of it (no DISPLAY: Qt cannot fall back to X); what a user sees and does passes through the compositor —
    the screen is read back from the X server, and a click there reaches the viewer as a Wayland pointer event."""

    xserver: XServer
    process: subprocess.Popen
    runtime_dir: Path
    socket: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
        return {**env, "WAYLAND_DISPLAY": self.socket, "XDG_RUNTIME_DIR": str(self.runtime_dir),
                "XDG_SESSION_TYPE": "wayland", **extra}

    def screenshot(self) -> np.ndarray:
        return self.xserver.screenshot()

    def click(self, x: int, y: int) -> None:
        self.xserver.click(x, y)

    def stop(self) -> None:
        import shutil

        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def start_weston(xserver: XServer, size: tuple[int, int] = SCREEN, timeout_s: float = 30) -> WaylandSession:
    """Weston (pixman: no GPU needed) on `xserver`, its socket in a fresh private runtime folder."""
    import tempfile

    runtime_dir = Path(tempfile.mkdtemp(prefix="mededge-wayland-"))  # 0700, as XDG_RUNTIME_DIR must be
    socket = "wayland-mededge"
    process = subprocess.Popen(["weston", "--backend=x11-backend.so", "--shell=kiosk-shell.so", "--use-pixman",
                                "--no-config", f"--width={size[0]}", f"--height={size[1]}", f"--socket={socket}"],
                               env={**xserver.env(), "XDG_RUNTIME_DIR": str(runtime_dir)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    while not (runtime_dir / socket).exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"Weston did not start: {process.communicate()[0][-1000:]}")
        time.sleep(0.1)
    return WaylandSession(xserver, process, runtime_dir, socket)


def start_xvfb(size: tuple[int, int] = SCREEN) -> XServer:
    """Xvfb on a free display number (it picks one and tells us through -displayfd), no TCP listener."""
    read, write = os.pipe()
    process = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{size[0]}x{size[1]}x24",
                                "-nolisten", "tcp", "-noreset"], pass_fds=(write,), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    os.close(write)
    with os.fdopen(read) as stream:
        number = stream.readline().strip()
    if not number:
        process.kill()
        raise RuntimeError(f"Xvfb did not start: {process.stderr.read().decode(errors='replace')[-500:]}")
    return XServer(f":{number}", process)


def read_xwd(data: bytes) -> np.ndarray:
    """An X Window Dump (xwd's format: ZPixmap, 24/32 bits per pixel, X11 version 7) as an RGB array."""
    (header_size, version, pixmap_format, _depth, width, height, _xoffset, byte_order, _unit, _bit_order, _pad,
     bits_per_pixel, bytes_per_line, _visual, red_mask, _green_mask, blue_mask, *_rest) = struct.unpack(">25I", data[:100])
    colours = _rest[2]  # ncolors: the colour map entries (12 bytes each) before the pixels
    if version != 7 or pixmap_format != 2 or bits_per_pixel != 32:
        raise ValueError(f"unexpected xwd dump: version {version}, format {pixmap_format}, {bits_per_pixel} bpp")
    start = header_size + colours * 12
    rows = np.frombuffer(data, np.uint8, count=height * bytes_per_line, offset=start).reshape(height, bytes_per_line)
    pixels = rows[:, :width * 4].reshape(height, width, 4)
    if byte_order == 1:  # MSBFirst: x R G B
        pixels = pixels[..., ::-1]
    # Now B, G, R, x in memory order (the masks say where red is; on every X server tried it is 0xff0000).
    if red_mask == 0xFF0000 and blue_mask == 0xFF:
        return np.ascontiguousarray(pixels[..., [2, 1, 0]])
    return np.ascontiguousarray(pixels[..., [0, 1, 2]])


def save_png(rgb: np.ndarray, path: Path) -> Path:
    import cv2

    cv2.imwrite(str(path), rgb[..., ::-1])
    return path


def _grey_levels(region: np.ndarray) -> int:
    """How many distinct grey levels a region shows (pixels with R = G = B): a radiograph shows many."""
    grey = region[(region[..., 0] == region[..., 1]) & (region[..., 1] == region[..., 2])]
    return len(np.unique(grey[:, 0]))


def _bar_pixels(region: np.ndarray) -> int:
    return int(sum(np.all(np.abs(region.astype(int) - colour) <= 6, axis=-1).sum() for colour in FINDING_BARS))


THUMBNAILS_END = 118  # the Studies tree's thumbnails lie left of this, under three levels (patient, study, series)


def _thumbnails(strip: np.ndarray) -> int:
    """Thumbnail images stacked in a vertical strip: runs of at least 40 rows that each hold many grey levels."""
    rows = [len(np.unique(row[:, 0])) >= 16 for row in strip]
    runs, length = 0, 0
    for busy in [*rows, False]:
        if busy:
            length += 1
            continue
        runs += length >= 40
        length = 0
    return runs


def _first_toolbar_button(screen: np.ndarray) -> tuple[int, int]:
    """The centre of the first toolbar button's label: the second band of text from the top of the window (the
    menu bar is the first), its first word-sized cluster of text pixels from the left."""
    top = screen[:120, : SCREEN[0] // 2].astype(int).mean(axis=-1)
    background = np.median(top, axis=1, keepdims=True)
    text = np.abs(top - background) > 90
    rows = text.any(axis=1)
    bands, start = [], None
    for y, busy in enumerate([*rows, False]):
        if busy and start is None:
            start = y
        elif not busy and start is not None:
            bands.append((start, y))
            start = None
    bands = [band for band in bands if band[1] - band[0] >= 5]
    assert len(bands) >= 2, f"no menu bar and toolbar text found: bands {bands}"
    y0, y1 = bands[1]
    columns = text[y0:y1].any(axis=0)
    clusters, start, gap = [], None, 0
    for x, busy in enumerate([*columns, False]):
        if busy:
            start = x if start is None else start
            gap = 0
        elif start is not None:
            gap += 1
            if gap >= 8:  # a space between words in a label is narrower than the gap between buttons
                clusters.append((start, x - gap))
                start, gap = None, 0
    clusters = [c for c in clusters if c[1] - c[0] >= 20]  # not the toolbar's handle
    assert clusters, "no toolbar button text found"
    x0, x1 = clusters[0]
    return (x0 + x1) // 2, (y0 + y1) // 2


def drive_viewer(server: XServer | WaylandSession, command: list[str], studies: list[Path], home: Path, out: Path,
                 cwd: Path | None = None) -> np.ndarray:
    """Start the viewer (`command`, which opens `studies`) on `server` as a user with no settings yet, wait until
    every study is listed and the first one given is shown (on X, its file name in the window title; Weston's kiosk
    shell shows none), click the first toolbar button (Analyze) with a real X event, and wait until the findings
    are on screen. Screenshots go to `out`; the last one is returned. AssertionError (with the viewer's output)
    when any step does not happen."""
    on_x = isinstance(server, XServer)
    env = server.env(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    viewer = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)  # `make run` and the python it starts

    def said() -> str:
        os.killpg(viewer.pid, signal.SIGKILL)
        return viewer.communicate()[0][-3000:]

    try:
        window = None
        if on_x:
            try:
                window = server.window("MedEdge Viewer", timeout_s=120)
            except TimeoutError:
                raise AssertionError(f"the viewer showed no window on the X server; it said: {said()}") from None
        width, height = SCREEN
        x = server if on_x else server.xserver  # Weston draws the pointer into what it shows: out of the way
        x.run("xdotool", "mousemove", "--sync", "0", str(height - 1))
        deadline = time.monotonic() + 180
        while True:  # every study listed, the first one shown
            screen = server.screenshot()
            listed = _thumbnails(screen[60:height - 60, 2:THUMBNAILS_END])
            title = server.run("xdotool", "getwindowname", window) if on_x else None  # (Weston's kiosk: none)
            if (listed == len(studies) and (title is None or studies[0].name in title)
                    and _grey_levels(screen[100:height - 100, 400:900]) >= 64):
                break
            assert viewer.poll() is None, said()
            assert time.monotonic() < deadline, f"{listed} studies listed, title {title!r}: " \
                                                f"{save_png(screen, out / 'opened.png')}"
            time.sleep(0.5)
        save_png(screen, out / "opened.png")
        if on_x:
            geometry = dict(line.split("=") for line in server.run("xdotool", "getwindowgeometry", "--shell",
                                                                    window).split())
            assert int(geometry["WIDTH"]) <= width and int(geometry["HEIGHT"]) <= height, geometry  # fits the screen
        assert _bar_pixels(screen[:, int(width * 0.72):]) == 0  # nothing analysed yet

        server.click(*_first_toolbar_button(screen))
        deadline = time.monotonic() + 300
        while _bar_pixels((screen := server.screenshot())[:, int(width * 0.72):]) < 14 * 200:
            assert viewer.poll() is None, said()
            assert time.monotonic() < deadline, f"no findings shown: {save_png(screen, out / 'analysed.png')}"
            time.sleep(1)
        save_png(screen, out / "analysed.png")
        assert _grey_levels(screen[100:height - 100, 400:900]) >= 64  # the radiograph is still there
        assert _thumbnails(screen[60:height - 60, 2:THUMBNAILS_END]) == len(studies)
        return screen
    finally:
        if viewer.poll() is None:
            os.killpg(viewer.pid, signal.SIGTERM)
            try:
                viewer.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(viewer.pid, signal.SIGKILL)


def main() -> int:
    """`python tests/x11.py OUT_DIR APP [ARGS…] -- STUDIES…`: the same check on another build of the viewer (the
    desktop bundle's smoke test in packaging/desktop/build.sh)."""
    import sys
    import tempfile

    out, rest = Path(sys.argv[1]), sys.argv[2:]
    split = rest.index("--")
    command, studies = rest[:split], [Path(p) for p in rest[split + 1:]]
    out.mkdir(parents=True, exist_ok=True)
    server = start_xvfb()
    try:
        with tempfile.TemporaryDirectory() as home:
            drive_viewer(server, [*command, *map(str, studies)], studies, Path(home), out)
    except AssertionError as error:
        print(f"x11: {error}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    print(f"x11: {len(studies)} studies listed, Analyze clicked, findings shown on {server.display} "
          f"({SCREEN[0]}x{SCREEN[1]} Xvfb, xcb); screenshots in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
