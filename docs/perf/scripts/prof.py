"""prof.py SYSTEM SCEN N OUTPREFIX FORMAT(raw|flamegraph) [extra py-spy args]"""
import os, subprocess, sys, time
system, scen, n, out, fmt = sys.argv[1:6]
extra = sys.argv[6:]
env = dict(os.environ, PYTHONPATH=os.environ.get("WT", os.getcwd()))
PY = "/work/main/.venv/bin/python"; SPY = "/work/main/.venv/bin/py-spy"
ext = "txt" if fmt == "raw" else "svg"
srv = subprocess.Popen([PY, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pbbench.py"), "server", system], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
port = srv.stdout.readline().strip()
sp = subprocess.Popen([SPY, "record", "-r", "400", "-f", fmt, "-o", f"{out}-server.{ext}", "-p", str(srv.pid), "--threads"] + extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
c = subprocess.run([SPY, "record", "-r", "400", "-f", fmt, "-o", f"{out}-client.{ext}", "--threads"] + extra + ["--", PY, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pbbench.py"), "client", system, scen, port, n], env=env, capture_output=True, text=True)
print(c.stdout.strip().splitlines()[-1:] )
sp.send_signal(2); sp.wait(20)
srv.stdin.close(); srv.wait(10)
