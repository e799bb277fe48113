"""The systemd notify protocol over ``$NOTIFY_SOCKET`` (datagrams; '@' = abstract socket)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        self.dropped = 0  # messages lost because the socket's queue was full

    @classmethod
    def from_env(cls, env: Mapping[str, str], pid: int) -> Notifier:
        usec = env.get("WATCHDOG_USEC")
        wpid = env.get("WATCHDOG_PID")
        # WATCHDOG_PID names the process meant to ping; a child must not ping for its parent
        ok = usec and usec.isdigit() and (not wpid or wpid == str(pid))
        return cls(env.get("NOTIFY_SOCKET"), int(usec) if ok and usec else None)

    @property
    def watchdog_interval(self) -> float | None:
        """Ping at half the timeout, as sd_watchdog_enabled(3) recommends."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, *fields: str) -> bool:
        if self._sock is None or self.address is None:
            return False
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            # never wait: a notify queue nobody reads must not stall the main loop
            self._sock.sendto("\n".join(fields).encode(), socket.MSG_DONTWAIT, addr)
            return True
        except BlockingIOError:
            self.dropped += 1  # the next ping (a few seconds on) says the same
            return False
        except OSError:
            return False  # systemd gone (shutdown) or socket removed: nothing to tell

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more before TimeoutStartSec (a long start-up reconcile)."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
