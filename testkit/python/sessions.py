"""Interactive sessions from real Python clients: the `websockets` package against
GET /api/v1/sandboxes/{id}/exec/ws, and grpcio stubs generated from the repository's
protos against berth.v1.Sandboxes/Session. The same three cases run over both:

1. `cat` echoes what is sent on stdin and exits 0 after eof;
2. a command printing 20 MB: the client detaches half way, re-attaches with its last
   offset and gets the rest; the sha256 of everything equals the one the command
   computed inside the sandbox (printed on stderr, after the data);
3. a background session, attached 10 s after it started, gets its whole output.

Usage: sessions.py API_URL API_KEY SANDBOX_ID (PYTHONPATH holds the generated stubs).
Prints one line per passed case and OK at the end; any failure raises.
"""

import asyncio
import base64
import hashlib
import json
import queue
import sys
import threading
import time

import grpc
import websockets

from berth.v1 import sandboxes_pb2_grpc, sessions_pb2

API_URL, API_KEY, SANDBOX = sys.argv[1], sys.argv[2], sys.argv[3]
BIG = 20_000_000
BIG_COMMAND = (
    f"head -c {BIG} /dev/urandom > /tmp/big.$$ && cat /tmp/big.$$ && "
    "sha256sum /tmp/big.$$ >&2 && rm /tmp/big.$$"
)
BACKGROUND_COMMAND = "for i in 1 2 3 4 5; do echo line $i; done; sleep 1; echo finished"
BACKGROUND_OUTPUT = b"line 1\nline 2\nline 3\nline 4\nline 5\nfinished\n"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


# ---------------------------------------------------------------- WebSocket


def ws_url():
    return API_URL.replace("http://", "ws://", 1) + f"/api/v1/sandboxes/{SANDBOX}/exec/ws"


class WsSession:
    """One attached client: output collected by stream, offsets checked."""

    def __init__(self, ws):
        self.ws = ws
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.offset = None
        self.session_id = None
        self.exit = None
        self.detached = None

    async def next_event(self):
        frame = json.loads(await self.ws.recv())
        if "stream" in frame:
            data = (
                frame["data"].encode()
                if "data" in frame
                else base64.b64decode(frame["data_b64"])
            )
            check(frame["offset"] == self.offset, f"offset {frame['offset']} != {self.offset}")
            self.offset += len(data)
            (self.stdout if frame["stream"] == "stdout" else self.stderr).extend(data)
        elif frame.get("type") == "started":
            self.session_id = frame["session_id"]
            self.offset = frame.get("offset", 0)
        elif frame.get("type") == "gap":
            raise AssertionError(f"unexpected gap: {frame}")
        elif frame.get("type") == "exit":
            self.exit = frame["exit_code"]
        elif frame.get("type") == "detached":
            self.detached = frame["reason"]
        elif frame.get("type") == "error":
            raise AssertionError(f"error frame: {frame}")
        return frame

    async def until_done(self):
        while (await self.next_event()).get("type") != "done":
            pass


def ws_connect():
    return websockets.connect(
        ws_url(), additional_headers={"X-API-Key": API_KEY}, max_size=None
    )


async def ws_cat():
    async with ws_connect() as ws:
        await ws.send(json.dumps({"command": "cat"}))
        session = WsSession(ws)
        await session.next_event()
        check(session.session_id, "started first")
        await ws.send(json.dumps({"type": "stdin", "data": "hello from python\n"}))
        await ws.send(json.dumps({"type": "stdin", "data_b64": base64.b64encode(b"\x00\xffbytes\n").decode()}))
        await ws.send(json.dumps({"type": "eof"}))
        await session.until_done()
        check(session.stdout == b"hello from python\n\x00\xffbytes\n", f"cat echoed {bytes(session.stdout)!r}")
        check(session.exit == 0, f"cat exited {session.exit}")
    print("websocket: cat echoes stdin and exits 0 after eof")


async def ws_detach_and_resume():
    async with ws_connect() as ws:
        await ws.send(json.dumps({"command": BIG_COMMAND}))
        first = WsSession(ws)
        while len(first.stdout) < BIG // 2:
            await first.next_event()
        await ws.send(json.dumps({"type": "detach"}))
        await first.until_done()
        check(first.detached == "detach" and first.exit is None, "detached before the end")
    async with ws_connect() as ws:
        await ws.send(json.dumps({"session_id": first.session_id, "offset": first.offset}))
        second = WsSession(ws)
        second.stdout, second.stderr = first.stdout, first.stderr
        await second.until_done()
    check(second.exit == 0, f"exit {second.exit}: {bytes(second.stderr)!r}")
    check(len(second.stdout) == BIG, f"{len(second.stdout)} bytes")
    expected = second.stderr.decode().split()[0]
    check(hashlib.sha256(second.stdout).hexdigest() == expected, "sha256 differs")
    print(f"websocket: detached at {len(first.stdout)} bytes, resumed, sha256 {expected[:12]}… matches")


async def ws_start_background():
    async with ws_connect() as ws:
        await ws.send(json.dumps({"command": BACKGROUND_COMMAND, "background": True}))
        session = WsSession(ws)
        await session.until_done()
        check(session.session_id and session.exit is None, "started, not attached")
        return session.session_id


async def ws_attach_background(session_id):
    async with ws_connect() as ws:
        await ws.send(json.dumps({"session_id": session_id, "offset": 0}))
        session = WsSession(ws)
        await session.until_done()
    check(bytes(session.stdout) == BACKGROUND_OUTPUT, f"got {bytes(session.stdout)!r}")
    check(session.exit == 0, f"exit {session.exit}")
    print("websocket: a background session attached 10 s later gets its whole output")


# ---------------------------------------------------------------- gRPC


class GrpcSession:
    """A Session call fed from a queue, with the same bookkeeping as WsSession."""

    def __init__(self, stub, open_message):
        self.requests = queue.Queue()
        self.requests.put(sessions_pb2.SessionRequest(open=open_message))
        self.call = stub.Session(self._feed(), metadata=(("x-api-key", API_KEY),))
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.offset = open_message.offset
        self.session_id = None
        self.exit = None
        self.detached = None

    def _feed(self):
        while True:
            message = self.requests.get()
            if message is None:
                return
            yield message

    def send(self, **fields):
        self.requests.put(sessions_pb2.SessionRequest(**fields))

    def events(self):
        for event in self.call:
            kind = event.WhichOneof("event")
            if kind == "started":
                self.session_id = event.started.session_id
                self.offset = event.started.offset
            elif kind == "output":
                check(event.output.offset == self.offset, "offsets run on")
                self.offset += len(event.output.data)
                target = self.stdout if event.output.stream == "stdout" else self.stderr
                target.extend(event.output.data)
            elif kind == "gap":
                raise AssertionError(f"unexpected gap {event.gap}")
            elif kind == "exit":
                self.exit = event.exit.exit_code
            elif kind == "detached":
                self.detached = event.detached.reason
            elif kind == "error":
                raise AssertionError(f"error event {event.error}")
            yield kind
        self.requests.put(None)


def grpc_cat(stub):
    session = GrpcSession(stub, sessions_pb2.SessionOpen(sandbox_id=SANDBOX, command="cat"))
    session.send(stdin=b"hello over grpc\n")
    session.send(eof=sessions_pb2.SessionEof())
    for _ in session.events():
        pass
    check(session.stdout == b"hello over grpc\n", f"cat echoed {bytes(session.stdout)!r}")
    check(session.exit == 0, f"exit {session.exit}")
    print("grpc: cat echoes stdin and exits 0 after eof")


def grpc_detach_and_resume(stub):
    first = GrpcSession(stub, sessions_pb2.SessionOpen(sandbox_id=SANDBOX, command=BIG_COMMAND))
    detached = False
    for _ in first.events():
        if not detached and len(first.stdout) >= BIG // 2:
            first.send(detach=sessions_pb2.SessionDetach())
            detached = True
    check(first.detached == "detach" and first.exit is None, "detached before the end")
    second = GrpcSession(
        stub,
        sessions_pb2.SessionOpen(
            sandbox_id=SANDBOX, session_id=first.session_id, offset=first.offset
        ),
    )
    second.stdout, second.stderr = first.stdout, first.stderr
    for _ in second.events():
        pass
    check(second.exit == 0, f"exit {second.exit}")
    check(len(second.stdout) == BIG, f"{len(second.stdout)} bytes")
    expected = second.stderr.decode().split()[0]
    check(hashlib.sha256(second.stdout).hexdigest() == expected, "sha256 differs")
    print(f"grpc: detached at {len(first.stdout)} bytes, resumed, sha256 {expected[:12]}… matches")


def grpc_start_background(stub):
    session = GrpcSession(
        stub,
        sessions_pb2.SessionOpen(sandbox_id=SANDBOX, command=BACKGROUND_COMMAND, background=True),
    )
    for _ in session.events():
        pass
    check(session.session_id and session.exit is None, "started, not attached")
    return session.session_id


def grpc_attach_background(stub, session_id):
    session = GrpcSession(
        stub, sessions_pb2.SessionOpen(sandbox_id=SANDBOX, session_id=session_id)
    )
    for _ in session.events():
        pass
    check(bytes(session.stdout) == BACKGROUND_OUTPUT, f"got {bytes(session.stdout)!r}")
    check(session.exit == 0, f"exit {session.exit}")
    print("grpc: a background session attached 10 s later gets its whole output")


async def main():
    channel = grpc.insecure_channel(
        API_URL.replace("http://", "", 1),
        options=[("grpc.max_receive_message_length", 8 << 20)],
    )
    stub = sandboxes_pb2_grpc.SandboxesStub(channel)
    ws_background = await ws_start_background()
    grpc_background = grpc_start_background(stub)
    started = time.monotonic()
    await ws_cat()
    grpc_cat(stub)
    await ws_detach_and_resume()
    await asyncio.to_thread(grpc_detach_and_resume, stub)
    await asyncio.sleep(max(0.0, 10 - (time.monotonic() - started)))
    await ws_attach_background(ws_background)
    grpc_attach_background(stub, grpc_background)
    print("OK")


asyncio.run(main())
