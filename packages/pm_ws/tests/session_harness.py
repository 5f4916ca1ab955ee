"""Sessions with no socket: a real `Gateway`, only the transport and socket faked.

The gateway is the one the server runs — MemoryBroker, a fresh CollectorRegistry,
an HS256 JwtValidator on a manual wall clock, a 10 ms deadline wheel — and each
connection goes through its socket-free `admit` and `open_session`. Only the
socket boundary is faked: a `RecordingTransport` that keeps every write
(WebSocket frames, decoded back into `ServerMessage`s) and a `RecordingSocket`
that keeps control frames, close reasons and aborts.

Outboxes flush in a `call_soon` callback; `settle()` awaits a future resolved by a
later `call_soon`, so once it returns every flush scheduled before it has run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
import pm_proto as pb
from pm_auth import JwtValidator
from pm_testkit import Changes
from pm_ws import Admitted, Gateway, GatewayOptions, Session
from pm_ws.brokers.broker import PublishResult
from pm_ws.brokers.memory_broker import MemoryBroker
from pm_ws.close_codes import CloseReason
from pm_ws.deadlines import DeadlineWheel
from pm_ws.events import EventDraft, Scope, StreamPosition, TenantId
from pm_ws.limits import GatewayLimits
from prometheus_client import CollectorRegistry
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

SECRET = "session-harness-secret-of-at-least-32-bytes"
TENANT = TenantId("acme")
OTHER_TENANT = TenantId("globex")
USER = "alice"
NOW = 1_700_000_000.0
LEEWAY_SECS = 30.0
WAIT_SECS = 2.0
REMOTE = "203.0.113.7:50000"


class WallClock:
    """Seconds since the epoch that move only when a test says so.

    `read` is set at every reading, so a test can wait for a timer callback that
    consults the clock.
    """

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.read = asyncio.Event()

    def __call__(self) -> float:
        self.read.set()
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


def make_token(
    *,
    exp: float,
    iat: float = NOW,
    sub: str = USER,
    tenant: str = TENANT,
    secret: str = SECRET,
) -> str:
    claims = {"sub": sub, "tenant_id": tenant, "iat": int(iat), "exp": int(exp)}
    return jwt.encode(claims, secret, algorithm="HS256")


async def settle() -> None:
    """Return once every callback scheduled with `call_soon` before this call has run."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


def frame_payloads(data: bytes) -> list[bytes]:
    """Split bytes the server wrote into frame payloads: whole, final, unmasked binary frames."""
    client = Protocol(Side.CLIENT, max_size=None)  # a client's end refuses masked frames
    client.receive_data(data)
    frames = [event for event in client.events_received() if isinstance(event, Frame)]
    assert client.parser_exc is None, client.parser_exc
    assert not client.reader.buffer, "a frame was cut short"
    assert all(frame.opcode is Opcode.BINARY and frame.fin for frame in frames), frames
    return [bytes(frame.data) for frame in frames]


def decode_writes(writes: Sequence[bytes]) -> list[pb.ServerMessage]:
    return [
        pb.ServerMessage.FromString(payload) for data in writes for payload in frame_payloads(data)
    ]


def kinds(messages: Sequence[pb.ServerMessage]) -> list[str | None]:
    return [message.WhichOneof("payload") for message in messages]


def seqs(messages: Sequence[pb.ServerMessage]) -> list[int]:
    return [m.event.position.seq for m in messages if m.WhichOneof("payload") == "event"]


def subscribe(
    request_id: str,
    *,
    projects: Sequence[str] = (),
    sprints: Sequence[str] = (),
    work_items: Sequence[str] = (),
    resume_from: StreamPosition | None = None,
) -> pb.ClientMessage:
    message = pb.Subscribe(project_ids=projects, sprint_ids=sprints, work_item_ids=work_items)
    if resume_from is not None:
        message.resume_from.CopyFrom(
            pb.StreamPosition(epoch=resume_from.epoch, seq=resume_from.seq)
        )
    return pb.ClientMessage(request_id=request_id, subscribe=message)


def unsubscribe(request_id: str, *, projects: Sequence[str] = ()) -> pb.ClientMessage:
    return pb.ClientMessage(request_id=request_id, unsubscribe=pb.Unsubscribe(project_ids=projects))


def ping(request_id: str, client_time_ms: int = 0) -> pb.ClientMessage:
    return pb.ClientMessage(request_id=request_id, ping=pb.Ping(client_time_ms=client_time_ms))


class RecordingTransport:
    """The socket boundary an outbox writes to: keeps every write, the very objects."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing


class RecordingSocket:
    """A `SessionSocket` that keeps control frames, close reasons and aborts.

    `finish_on_close` plays a peer that completes the closing handshake at once:
    `Session.closed` runs as soon as the session has asked for the close, so a drain
    deadline can never race it. `answer_pings` plays a peer that answers each ping
    on the next loop iteration.
    """

    def __init__(self, *, finish_on_close: bool = False, answer_pings: bool = False) -> None:
        self.controls: list[bytes] = []
        self.closes: list[CloseReason] = []
        self.aborts = 0
        self.changed = Changes()
        self.finish_on_close = finish_on_close
        self.answer_pings = answer_pings
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        assert self._session is not None
        return self._session

    def attach(self, session: Session) -> None:
        self._session = session

    def send_control(self, frame: bytes) -> None:
        self.controls.append(frame)
        self.changed.notify()
        if self.answer_pings:
            asyncio.get_running_loop().call_soon(self.session.pong_received)

    def close(self, reason: CloseReason) -> None:
        self.closes.append(reason)
        self.changed.notify()
        if self.finish_on_close:
            self.session.closed()

    def abort(self) -> None:
        self.aborts += 1
        self.changed.notify()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        await self.changed.wait_for(condition)


@dataclass
class Connection:
    """One session with its slot, recording transport and socket, seen from the client's side."""

    admitted: Admitted
    session: Session
    transport: RecordingTransport
    socket: RecordingSocket
    _read: int = 0

    async def send(self, frame: pb.ClientMessage | bytes | str) -> None:
        data = frame.SerializeToString() if isinstance(frame, pb.ClientMessage) else frame
        await self.session.handle_frame(data)

    async def received(self) -> list[pb.ServerMessage]:
        """Everything the session wrote since the last call, once queued frames are flushed."""
        await settle()
        fresh = self.transport.writes[self._read :]
        self._read = len(self.transport.writes)
        return decode_writes(fresh)

    async def request(self, frame: pb.ClientMessage | bytes | str) -> pb.ServerMessage:
        """Send one frame and return the one message written in answer."""
        await self.send(frame)
        answers = await self.received()
        assert len(answers) == 1, answers
        return answers[0]

    @property
    def closed_with(self) -> list[CloseReason]:
        return self.socket.closes


class Engine:
    """A real `Gateway` on the running loop, connected to through its socket-free methods.

    `options` are the other `GatewayOptions` (origins, tenant check, ...).
    """

    def __init__(
        self,
        *,
        limits: GatewayLimits | None = None,
        broker: MemoryBroker | None = None,
        leeway_secs: float = LEEWAY_SECS,
        **options: Any,
    ) -> None:
        self.clock = WallClock()
        self.broker = broker or MemoryBroker()
        self.prometheus = CollectorRegistry()
        self.gateway = Gateway(
            jwt=JwtValidator.hs256(SECRET, leeway_secs=leeway_secs, clock=self.clock),
            broker=self.broker,
            metrics=self.prometheus,
            options=GatewayOptions(limits=limits or GatewayLimits(), **options),
            wall_clock=self.clock,
            deadlines=DeadlineWheel(resolution_secs=0.01),
        )
        self.connections: list[Connection] = []

    async def __aenter__(self) -> Engine:
        await self.gateway.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Play the adapter's end of every connection: no timer or slot outlives the test."""
        for connection in self.connections:
            await self.gateway.end_session(connection.session)
            connection.admitted.release()
        await self.gateway.close()

    def token(self, *, expires_in: float = 3600, sub: str = USER, tenant: str = TENANT) -> str:
        """A token issued now by the clock, expiring `expires_in` seconds later."""
        return make_token(
            exp=self.clock.now + expires_in, iat=self.clock.now, sub=sub, tenant=tenant
        )

    async def connect(
        self,
        *,
        user: str = USER,
        tenant: str = TENANT,
        expires_in: float = 3600,
        exp: int | None = None,
        socket: RecordingSocket | None = None,
        read_welcome: bool = True,
    ) -> Connection:
        """A started session (Welcome queued); with `read_welcome`, the Welcome is read off.

        The token expires `expires_in` seconds from the clock's now, or at `exp`.
        """
        if exp is None:
            token = self.token(expires_in=expires_in, sub=user, tenant=tenant)
        else:
            token = make_token(exp=exp, iat=self.clock.now, sub=user, tenant=tenant)
        admitted = await self.gateway.admit({"Authorization": f"Bearer {token}"})
        assert isinstance(admitted, Admitted), admitted
        transport, socket = RecordingTransport(), socket or RecordingSocket()
        session = await self.gateway.open_session(
            admitted, transport=transport, socket=socket, remote=REMOTE
        )
        assert isinstance(session, Session), session
        socket.attach(session)
        connection = Connection(admitted, session, transport, socket)
        self.connections.append(connection)
        self.gateway.start_session(session)
        if read_welcome:
            assert kinds(await connection.received()) == ["welcome"]
        return connection

    async def publish(
        self,
        project_id: str,
        *,
        sprint_id: str = "",
        work_item_id: str = "",
        tenant: str = TENANT,
    ) -> PublishResult:
        return await self.gateway.publish(
            EventDraft(
                tenant_id=TenantId(tenant),
                event_id=uuid.uuid4().hex,
                type="work_item.updated",
                scope=Scope(project_id, sprint_id, work_item_id),
                payload=b'{"title":"Ship it"}',
                actor_user_id="bob",
                occurred_at_ms=int(NOW * 1000),
            )
        )

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.prometheus.get_sample_value(name, labels or {}) or 0.0
