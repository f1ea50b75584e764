"""Floods the gateway as an anonymous attacker would, speaking raw HTTP/2
(the `h2` package) or nothing at all, and prints what the server did as one
JSON object. Driven by tests/it/security.rs and by `loadgen` for BENCHMARKS.md.

  streams ADDR N HOLD       one connection, N health Check streams opened with
                            HEADERS and never ended, held HOLD seconds
  silent ADDR N HOLD [tls]  N connections that never send a byte (after the
                            TLS handshake with `tls`), held HOLD seconds
  reset ADDR N STREAMS      N connections, each opening and at once
                            cancelling STREAMS streams (rapid reset)

Every loop is bounded: by N, STREAMS and HOLD.
"""

import json
import select
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

HEALTH_CHECK = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/grpc.health.v1.Health/Check"),
    (":authority", "gateway"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]
REFUSED_STREAM = 7


def connect(addr, tls=False):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return wrap(sock) if tls else sock


def wrap(sock):
    """A TLS client on `sock`, handshaken, trusting any certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context.wrap_socket(sock)


def h2_connection():
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    # An attacker ignores the server's SETTINGS_MAX_CONCURRENT_STREAMS.
    type(conn).open_outbound_streams = property(lambda self: 0)
    conn.initiate_connection()
    return conn


def pump(sock, conn, seconds, on_event):
    """Reads and answers frames for `seconds` (or until the server closes)."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        readable, _, _ = select.select([sock], [], [], min(left, 0.5))
        if not readable:
            continue
        try:
            data = sock.recv(65536)
        except OSError:
            return False
        if not data:
            return False
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            return False
        for event in events:
            on_event(event)
        outgoing = conn.data_to_send()
        if outgoing:
            try:
                sock.sendall(outgoing)
            except OSError:
                return False


def streams(addr, count, hold):
    sock = connect(addr)
    conn = h2_connection()
    sock.sendall(conn.data_to_send())
    settings = {}
    refused, ended, codes, other_resets = set(), set(), {}, 0

    def on_event(event):
        nonlocal other_resets
        if isinstance(event, h2.events.RemoteSettingsChanged):
            for code, setting in event.changed_settings.items():
                settings[str(code.name if hasattr(code, "name") else code)] = setting.new_value
        elif isinstance(event, h2.events.StreamReset):
            if event.error_code == REFUSED_STREAM:
                refused.add(event.stream_id)
            else:
                other_resets += 1
        elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            for name, value in event.headers:
                if name == b"grpc-status":
                    code = value.decode()
                    codes[code] = codes.get(code, 0) + 1
                    ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            ended.add(event.stream_id)

    # Read the server's SETTINGS first, as a client would.
    pump(sock, conn, 0.5, on_event)
    started = time.monotonic()
    sent = 0
    for i in range(count):
        stream_id = conn.get_next_available_stream_id()
        try:
            conn.send_headers(stream_id, HEALTH_CHECK, end_stream=False)
        except h2.exceptions.ProtocolError:
            break
        sent += 1
        if i % 100 == 99:
            try:
                sock.sendall(conn.data_to_send())
            except OSError:
                break
    try:
        sock.sendall(conn.data_to_send())
    except OSError:
        pass
    open_after = pump(sock, conn, hold, on_event)
    sock.close()
    print(json.dumps({
        "sent": sent,
        "refused": len(refused),
        "ended": len(ended - refused),
        "codes": codes,
        "other_resets": other_resets,
        "settings": settings,
        "connection_open_after_hold": open_after,
        "seconds": round(time.monotonic() - started, 2),
    }))


def silent(addr, count, hold, tls):
    socks, failed = [], 0
    # Every TCP connection first, as fast as they go, then the handshakes.
    raw = []
    for _ in range(count):
        try:
            raw.append((connect(addr), time.monotonic()))
        except OSError:
            failed += 1
    for sock, opened in raw:
        if tls:
            try:
                sock = wrap(sock)
            except (OSError, ssl.SSLError):
                failed += 1
                sock.close()
                continue
        # Reads below must not wait: TLS may have records that carry no data.
        sock.setblocking(False)
        socks.append((sock, opened))
    started = time.monotonic()
    closed_after = []
    still_open = {id(s): (s, t) for s, t in socks}
    deadline = started + hold
    while still_open and time.monotonic() < deadline:
        readable, _, _ = select.select([s for s, _ in still_open.values()], [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(1024)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                _, opened = still_open.pop(id(sock))
                closed_after.append(time.monotonic() - opened)
                sock.close()
    for sock, _ in still_open.values():
        sock.close()
    closed_after.sort()
    print(json.dumps({
        "opened": len(socks),
        "failed": failed,
        "closed": len(closed_after),
        "closed_at_once": sum(1 for s in closed_after if s < 0.5),
        "closed_first_s": round(closed_after[0], 2) if closed_after else None,
        "closed_last_s": round(closed_after[-1], 2) if closed_after else None,
        "still_open": len(still_open),
    }))


def reset(addr, count, per_connection):
    sent, closed_by_server = 0, 0
    for _ in range(count):
        try:
            sock = connect(addr)
        except OSError:
            continue
        conn = h2_connection()
        try:
            for _ in range(per_connection):
                stream_id = conn.get_next_available_stream_id()
                conn.send_headers(stream_id, HEALTH_CHECK, end_stream=False)
                conn.reset_stream(stream_id)
                sent += 1
            sock.sendall(conn.data_to_send())
            if not pump(sock, conn, 0.2, lambda event: None):
                closed_by_server += 1
        except (OSError, h2.exceptions.ProtocolError):
            closed_by_server += 1
        sock.close()
    print(json.dumps({"reset_streams": sent, "connections": count,
                      "closed_by_server": closed_by_server}))


def main(argv):
    mode, addr = argv[1], argv[2]
    if mode == "streams":
        streams(addr, int(argv[3]), float(argv[4]))
    elif mode == "silent":
        silent(addr, int(argv[3]), float(argv[4]), len(argv) > 5 and argv[5] == "tls")
    elif mode == "reset":
        reset(addr, int(argv[3]), int(argv[4]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
