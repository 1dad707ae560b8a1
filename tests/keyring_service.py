"""A real Secret Service for the tests: a private D-Bus session bus and GNOME Keyring's daemon on it (Debian's
`gnome-keyring`, installed by `make test`), in a folder of their own, so that the `keyring` library stores and
reads sign-ins through the Secret Service as it does on a clinician's desktop (in the daemon's session collection,
not the login keyring: see SESSION_COLLECTION)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import keyring.backend
import keyring.backends.SecretService
import keyring.core

AVAILABLE = bool(shutil.which("dbus-daemon") and shutil.which("gnome-keyring-daemon"))
# GNOME Keyring's session collection: always there and unlocked. The login keyring is made from the password on
# the daemon's stdin at some point after it starts; a call before that asks to create a collection, which needs a
# prompt nobody answers here ("Prompt dismissed": CI failed so twice, however long it retried).
SESSION_COLLECTION = "/org/freedesktop/secrets/collection/session"


@contextlib.contextmanager
def running_keyring(folder: Path):
    """An unlocked login keyring on a private session bus; this process's `keyring` uses it inside the block."""
    home, runtime = folder / "home", folder / "run"
    home.mkdir(parents=True)
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_RUNTIME_DIR=str(runtime))
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"], stdout=subprocess.PIPE,
                           env=env, text=True)
    daemon = None
    previous = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    try:
        assert bus.stdout is not None
        env["DBUS_SESSION_BUS_ADDRESS"] = address = bus.stdout.readline().strip()
        daemon = subprocess.Popen(["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        assert daemon.stdin is not None
        daemon.stdin.write(b"test keyring password")  # unlocks (and creates) the login keyring
        daemon.stdin.close()
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
        keyring.backends.SecretService.Keyring.preferred_collection = SESSION_COLLECTION
        _choose_backend_again()  # the library judged once that no keyring runs here: again, now that one does
        deadline = time.monotonic() + 20
        while True:
            try:  # a write, as the tests will make, once the daemon answers on the bus
                keyring.set_password("mededge-test", "probe", "ready")
                keyring.delete_password("mededge-test", "probe")
                break
            except keyring.errors.KeyringError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                _choose_backend_again()
        yield
    finally:
        with contextlib.suppress(AttributeError):
            del keyring.backends.SecretService.Keyring.preferred_collection
        if previous is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = previous
        for process in (daemon, bus):
            if process is not None:
                process.terminate()
                process.wait(10)
        _choose_backend_again()


def _choose_backend_again() -> None:
    with contextlib.suppress(KeyError):  # (jaraco.functools.once: the viable backends, found once; KeyError: not yet)
        keyring.backend.get_all_keyring.reset()
    keyring.core.init_backend()
