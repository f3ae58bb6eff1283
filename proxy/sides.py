"""What a request, a session or a control request needs of the client's connection: the
narrow interface `ClientConnection` offers them (writes, flow control, how the exchange
ends), so none of them reaches for the connection's transport or its collaborators."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from proxy.tunnel import Tunnel


class ClientSide(Protocol):
    peer: str | None
    closed: bool

    def write(self, data: bytes) -> None: ...

    def writelines(self, parts: list[bytes]) -> None: ...

    def pause_reading(self, reason: int = ...) -> None: ...

    def resume_reading(self, reason: int = ...) -> None: ...

    def may_keep_alive(self) -> bool:
        """Whether an answer may leave the connection open (not while shutting down)."""

    def cut(self, *, reset: bool = False) -> None:
        """An answer was cut: the client must see it incomplete, never a clean end."""

    def close(self, *, linger: bool = False) -> None: ...

    def abort(self) -> None: ...

    def extra_info(self, name: str, default: Any = None) -> Any: ...

    def keep_alive_probes(self) -> None: ...

    def request_done(self, request: Any) -> None:
        """A request was answered (or refused): the next may go, or the connection ends."""

    def become(self, tunnel: Tunnel) -> None:
        """The upstream switched protocols: the connection is a tunnel from now on."""
