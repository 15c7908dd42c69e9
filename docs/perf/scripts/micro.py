import sys, time
from dubbo.transport import connection as c
from dubbo.transport.h2_internals import Connection
import h2.config
def make(client):
    cfg = h2.config.H2Configuration(client_side=client, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False, validate_inbound_headers=False, normalize_inbound_headers=False)
    return c.new_h2_connection(cfg, 16384, None)
cl, sv = make(True), make(False)
cl.initiate_connection(); sv.initiate_connection()
for conn in (cl, sv): conn.increment_flow_control_window(c.CONNECTION_WINDOW - 65535)
def out(conn):
    if hasattr(conn, "take_output"):
        return conn.take_output()
    return [conn.data_to_send()]
def xfer(a, b):
    for p in out(a): b.receive_data(p)
xfer(cl, sv); xfer(sv, cl); xfer(cl, sv)
payload = b"x" * (4 * 1024 * 1024)
N = 30
tsend = trecv = 0.0
for i in range(N):
    sid = cl.get_next_available_stream_id()
    cl.send_headers(sid, [(":method", "POST"), (":path", "/a"), (":scheme", "http"), (":authority", "x")])
    xfer(cl, sv)
    mv = memoryview(payload); off = 0
    while off < len(payload):
        t = time.process_time()
        n = min(cl.max_outbound_frame_size, len(payload) - off, cl.local_flow_control_window(sid))
        cl.send_data(sid, mv[off:off+n], end_stream=off+n == len(payload)); off += n
        parts = out(cl)
        joined = parts  # socket would take them
        t2 = time.process_time(); tsend += t2 - t
        got = 0
        for p in parts:
            for ev in sv.receive_data(p):
                if hasattr(ev, "flow_controlled_length") and ev.flow_controlled_length:
                    sv.acknowledge_received_data(ev.flow_controlled_length, sid)
        trecv += time.process_time() - t2
        xfer(sv, cl)
print(f"send {tsend/N*1e3:.2f} ms/4MiB  recv {trecv/N*1e3:.2f} ms/4MiB")
