"""Protobuf benchmark: python pbbench.py server SYSTEM | client SYSTEM SCEN PORT | run ..."""
import json, os, resource, signal, statistics, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from google.protobuf import wrappers_pb2

BV = wrappers_pb2.BytesValue
SMALL = BV(value=bytes(range(100)))
LARGE = BV(value=b"x" * (4 * 1024 * 1024))
MAXM = 8 * 1024 * 1024
SER = BV.SerializeToString
DES = BV.FromString
SVC = "bench.Bench"
if os.environ.get("RAW"):
    SER = DES = None
    SMALL = bytes(range(100)); LARGE = b"x" * (4 * 1024 * 1024)

def echo(req, ctx=None):
    return req

def pingpong(reqs, ctx=None):
    for r in reqs:
        yield r

def serve(system):
    if system == "dubbo":
        import dubbo
        from dubbo.configs import ServiceConfig
        from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
        svc = RpcServiceHandler(service_name=SVC, method_handlers={
            "Echo": RpcMethodHandler.unary(echo, "Echo", DES, SER),
            "PingPong": RpcMethodHandler.bi_stream(pingpong, "PingPong", DES, SER)})
        s = dubbo.Server(ServiceConfig(svc, host="127.0.0.1", port=0),
                         max_receive_message_size=MAXM, max_send_message_size=MAXM).start()
        port = s.port
        stop = lambda: s.stop(grace=1.0)
    else:
        import grpc
        h = grpc.method_handlers_generic_handler(SVC, {
            "Echo": grpc.unary_unary_rpc_method_handler(echo, DES, SER),
            "PingPong": grpc.stream_stream_rpc_method_handler(pingpong, DES, SER)})
        s = grpc.server(ThreadPoolExecutor(16), handlers=[h], options=[
            ("grpc.max_receive_message_length", MAXM), ("grpc.max_send_message_length", MAXM),
            ("grpc.so_reuseport", 0)])
        port = s.add_insecure_port("127.0.0.1:0"); s.start()
        stop = lambda: s.stop(1.0).wait(5)
    print(port, flush=True)
    while os.read(0, 100):
        pass
    stop()

def stub(system, port):
    if system == "dubbo":
        import dubbo
        from dubbo.configs import ReferenceConfig
        c = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SVC}"),
                         max_receive_message_size=MAXM, max_send_message_size=MAXM)
        return c.unary("Echo", SER, DES), c.bidi_stream("PingPong", SER, DES), c.close
    import grpc
    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_receive_message_length", MAXM), ("grpc.max_send_message_length", MAXM),
        ("grpc.enable_http_proxy", 0), ("grpc.use_local_subchannel_pool", 1)])
    return (ch.unary_unary(f"/{SVC}/Echo", SER, DES), ch.stream_stream(f"/{SVC}/PingPong", SER, DES), ch.close)

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def flt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def client(system, scen, port, n):
    out = {}
    if scen == "connect":
        for _ in range(3):
            e, p, c = stub(system, port); e(SMALL); c()
        ts = []
        c0 = cpu()
        for _ in range(n):
            t = time.perf_counter(); e, p, c = stub(system, port); e(SMALL); ts.append(time.perf_counter() - t); c()
        out = {"ms": statistics.median(ts) * 1e3, "ops": n, "ccpu": cpu() - c0}
        print(json.dumps(out)); return
    e, p, close = stub(system, port)
    f0 = flt()
    if scen == "unary":
        for _ in range(200): e(SMALL)
        ts = []; c0 = cpu(); t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter_ns(); e(SMALL); ts.append(time.perf_counter_ns() - t)
        el = time.perf_counter() - t0
        ts.sort()
        out = {"rate": n / el, "p50": ts[n // 2] / 1e3, "ops": n}
    elif scen == "thr":
        def run(k):
            for _ in range(k): e(SMALL)
        ths = [threading.Thread(target=run, args=(20,)) for _ in range(16)]
        [t.start() for t in ths]; [t.join() for t in ths]
        c0 = cpu(); t0 = time.perf_counter()
        per = n // 16
        ths = [threading.Thread(target=run, args=(per,)) for _ in range(16)]
        [t.start() for t in ths]; [t.join() for t in ths]
        el = time.perf_counter() - t0
        out = {"rate": per * 16 / el, "ops": per * 16}
    elif scen == "pp":
        import queue
        q = queue.SimpleQueue()
        def reqs():
            while True:
                x = q.get()
                if x is None: return
                yield x
        it = p(reqs())
        for _ in range(200): q.put(SMALL); next(it)
        c0 = cpu(); t0 = time.perf_counter()
        for _ in range(n): q.put(SMALL); next(it)
        el = time.perf_counter() - t0
        q.put(None)
        for _ in it: pass
        out = {"rate": n / el, "ops": n}
    elif scen == "large":
        e(LARGE)
        c0 = cpu(); t0 = time.perf_counter(); f0 = flt()
        for _ in range(n):
            r = e(LARGE)
        assert len(r if isinstance(r, bytes) else r.value) == 4194304
        el = time.perf_counter() - t0
        out = {"rate": n * 2 * 4194304 / el / 1e6, "ops": n}
    out["ccpu"] = cpu() - c0
    out["flt"] = (flt() - f0) / out["ops"]
    close()
    print(json.dumps(out))

def proc_flt(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[7])

def proc_cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

N = {"unary": 3000, "thr": 3200, "pp": 5000, "large": 60, "connect": 100}

def run(systems, scens, reps, wt):
    """Interleaved measurements; a system "dubbo:/path" imports dubbo from that tree."""
    env = dict(os.environ, PYTHONPATH=wt)
    py = "/work/main/.venv/bin/python"
    res = {}
    for rep in range(reps):
        for scen in scens:
            for system in systems:
                sysname, _, tree = system.partition(":")
                env = dict(os.environ, PYTHONPATH=tree or wt)
                srv = subprocess.Popen([py, __file__, "server", sysname], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, env=env, text=True)
                try:
                    port = srv.stdout.readline().strip()
                    s0 = proc_cpu(srv.pid); sf0 = proc_flt(srv.pid)
                    o = subprocess.run([py, __file__, "client", sysname, scen, port, str(N[scen])],
                                       capture_output=True, env=env, text=True, timeout=300)
                    s1 = proc_cpu(srv.pid); sf1 = proc_flt(srv.pid)
                    if o.returncode:
                        print(o.stderr, file=sys.stderr); continue
                    d = json.loads(o.stdout.strip().splitlines()[-1])
                    d["scpu_us"] = (s1 - s0) / d["ops"] * 1e6  # includes warmup/connect
                    d["sflt"] = (sf1 - sf0) / d["ops"]
                    d["ccpu_us"] = d.pop("ccpu") / d["ops"] * 1e6
                    res.setdefault((scen, system), []).append(d)
                    print(rep, scen, system, json.dumps(d), file=sys.stderr, flush=True)
                finally:
                    srv.stdin.close(); srv.wait(10)
    print("\nscen  metric   " + "  ".join(systems) + "  ratio(per-rep median)")
    for scen in scens:
        key = "ms" if scen == "connect" else "rate"
        for m in [key] + (["p50"] if scen == "unary" else []) + ["ccpu_us", "scpu_us", "flt", "sflt"]:
            vals = {s: [d.get(m, 0) for d in res.get((scen, s), [])] for s in systems}
            med = {s: statistics.median(v) if v else float("nan") for s, v in vals.items()}
            line = f"{scen:8} {m:8} " + "  ".join(f"{med[s]:10.1f}" for s in systems)
            if len(systems) >= 2 and m in (key, "p50"):
                b = vals[systems[-1]]
                for sname in systems[:-1]:
                    a = vals[sname]
                    rs = [(x / y if m == "rate" else y / x) for x, y in zip(a, b)]
                    if rs:
                        line += f"  | {sname[:12]}/{systems[-1]} {statistics.median(rs):.2f} ({', '.join(f'{r:.2f}' for r in rs)})"
            print(line)

if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2])
    elif sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        run(sys.argv[2].split(","), sys.argv[3].split(","), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else os.getcwd())
