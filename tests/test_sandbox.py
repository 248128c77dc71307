"""Model-written code tries every escape the old sandbox allowed; each must fail.

Each test first checks that the probe itself works (the same code run without
isolation does escape), so a broken probe cannot pass as a closed door.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from ponder.verifiers.code_exec import CodeVerifier
from ponder.verifiers.sandbox import Limits, Sandbox, pids_cgroup_root, unavailable_reason

BOX = Sandbox(Limits(wall_s=10, cpu_s=5, memory_mb=256, file_mb=4))
OPEN = Sandbox(Limits(wall_s=10, cpu_s=5, memory_mb=256, file_mb=4), isolation="none")


def test_without_bubblewrap_code_is_refused_not_run_unconfined(monkeypatch, tmp_path):
    """No bwrap on the PATH: the sandbox says why and refuses; it never falls back to running the code as is."""
    from ponder.verifiers import sandbox as sbx

    assert unavailable_reason() is None  # here (make test installs it) the sandbox works...
    planted = tmp_path / "ran"
    monkeypatch.setattr(sbx.shutil, "which", lambda name: None)
    sbx.unavailable_reason.cache_clear()  # it is probed once per process: probe again without bwrap
    try:
        assert "bubblewrap" in sbx.unavailable_reason()  # ...and without it, it names what is missing
        with pytest.raises(sbx.SandboxUnavailable, match="bubblewrap"):
            BOX.run_python(f"open({str(planted)!r}, 'w').write('x')")
        assert not planted.exists()
    finally:
        monkeypatch.undo()
        sbx.unavailable_reason.cache_clear()


def bare(code: str) -> dict:
    """The probe run here with no isolation at all and this process's environment (the control)."""
    p = subprocess.run([sys.executable, "-c", "import json, os, sys\n" + code], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def run(code: str, box: Sandbox = BOX) -> dict:
    p = box.run_python("import json, os, sys\n" + code)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_runs_as_nobody_with_no_new_privileges():
    got = run("status = open('/proc/self/status').read()\n"
              "nnp = [l.split()[1] for l in status.splitlines() if l.startswith('NoNewPrivs')][0]\n"
              "print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'nnp': nnp}))")
    assert got == {"uid": 65534, "euid": 65534, "nnp": "1"}


def test_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-of-the-gateway")
    probe = "print(json.dumps(dict(os.environ)))"
    # the probe finds the secret in a process that has it (run here, unconfined, with this process's env)
    assert bare(probe)["OPENAI_API_KEY"] == "sk-secret-of-the-gateway"
    env = run(probe)
    assert "sk-secret-of-the-gateway" not in json.dumps(env)
    assert set(env) <= {"PATH", "HOME", "PYTHONDONTWRITEBYTECODE", "LD_LIBRARY_PATH", "PWD", "LC_CTYPE"}
    # nor through /proc of the parent
    proc_probe = ("import glob\nseen = []\n"
                  "for p in glob.glob('/proc/[0-9]*/environ'):\n"
                  "    try: seen.append(open(p, 'rb').read().decode(errors='replace'))\n"
                  "    except OSError: pass\n"
                  "print(json.dumps({'leak': any('sk-secret' in s for s in seen)}))")
    assert bare(proc_probe) == {"leak": True}  # unconfined, /proc shows the secret (its own environ at least)
    assert run(proc_probe) == {"leak": False}


def test_host_files_cannot_be_read():
    probe = ("out = {}\n"
             "for p in ['/etc/passwd', '/etc/hostname', '/root', '" + os.getcwd() + "/pyproject.toml']:\n"
             "    try:\n"
             "        out[p] = bool(open(p).read(1)) if not os.path.isdir(p) else os.listdir(p) is not None\n"
             "    except OSError as e:\n"
             "        out[p] = type(e).__name__\n"
             "print(json.dumps(out))")
    assert run(probe, OPEN)["/etc/passwd"] is True  # the probe reads it when unconfined
    got = run(probe)
    assert all(isinstance(v, str) for v in got.values()), got


def test_writes_outside_the_private_directory_fail(tmp_path):
    target = tmp_path / "planted"
    probe = ("out = {}\n"
             "for p in ['/usr/planted', '/opt/python/planted', '/planted', '" + str(target) + "']:\n"
             "    try:\n"
             "        open(p, 'w').write('x'); out[p] = 'written'\n"
             "    except OSError as e:\n"
             "        out[p] = type(e).__name__\n"
             "open('here.txt', 'w').write('fine'); open('/tmp/t', 'w').write('fine')\n"
             "out['own'] = open('here.txt').read() + open('/tmp/t').read()\n"
             "print(json.dumps(out))")
    got = run(probe)
    assert got.pop("own") == "finefine"
    assert "written" not in got.values(), got
    assert not target.exists()


def test_other_processes_are_invisible_and_cannot_be_signalled():
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        probe = (f"import signal\nout = {{'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}}\n"
                 f"for pid in ({victim.pid}, {os.getpid()}, 1):\n"
                 f"    try:\n"
                 f"        os.kill(pid, signal.SIGTERM if pid != 1 else 0); out[str(pid)] = 'sent'\n"
                 f"    except OSError as e:\n"
                 f"        out[str(pid)] = type(e).__name__\n"
                 f"print(json.dumps(out))")
        got = run(probe)
        assert victim.pid not in got["pids"] and os.getpid() not in got["pids"]
        assert len(got["pids"]) <= 4, got["pids"]  # bwrap's init, python, and nothing of the host
        assert got[str(victim.pid)] == "ProcessLookupError"
        assert got[str(os.getpid())] in ("ProcessLookupError", "PermissionError")
        assert victim.poll() is None, "the process outside was killed"
    finally:
        victim.kill()
        victim.wait()


def test_no_network_even_to_the_host_loopback():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    accepted = []

    def accept():
        srv.settimeout(8)
        try:
            accepted.append(srv.accept())
        except OSError:
            pass

    probe = ("import socket\ntry:\n"
             f"    socket.create_connection(('127.0.0.1', {port}), timeout=3); r = 'connected'\n"
             "except OSError as e:\n    r = type(e).__name__\n"
             "try:\n    socket.getaddrinfo('pypi.org', 443); d = 'resolved'\nexcept OSError as e:\n    d = type(e).__name__\n"
             "print(json.dumps({'loopback': r, 'dns': d}))")
    t = threading.Thread(target=accept)
    t.start()
    try:
        assert run(probe, OPEN)["loopback"] == "connected"  # the probe reaches the port when unconfined
        t.join()
        assert accepted
        accepted.clear()
        t = threading.Thread(target=accept)
        t.start()
        got = run(probe)
        assert got["loopback"] != "connected" and got["dns"] != "resolved"
        t.join()
        assert not accepted
    finally:
        srv.close()


def test_limits_hold_memory_time_and_file_size():
    mem = BOX.run_python("x = bytearray(1 << 30)\nprint('allocated')")
    assert mem.returncode != 0 and "MemoryError" in mem.stderr
    spin = Sandbox(Limits(wall_s=2, cpu_s=30)).run_python("while True: pass")
    assert spin.timed_out
    big = BOX.run_python("open('big', 'wb').write(b'x' * (8 << 20))")
    assert big.returncode != 0
    flood = BOX.run_python("import sys\nwhile True: sys.stdout.write('y' * 65536)")
    assert flood.returncode != 0 and len(flood.stdout) <= 64 << 10


def test_a_fork_that_outlives_the_timeout_is_killed_with_it():
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "time.sleep(120)")
    before = _sleepers()
    got = Sandbox(Limits(wall_s=1.5)).run_python(code)
    assert got.timed_out
    assert _sleepers() <= before


_FORKER = """
import os, time
n = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        n += 1
except OSError as exc:
    print("refused", exc.errno)
print("forked", n)
"""


@pytest.mark.skipif(pids_cgroup_root() is None, reason="this host lets ponder make no pids cgroup")
def test_a_fork_bomb_stops_at_the_process_cap():
    roomy = Sandbox(Limits(wall_s=20, max_processes=1000)).run_python(_FORKER)
    assert roomy.ok and "forked 200" in roomy.stdout, roomy  # the probe forks when nothing caps it
    capped = Sandbox(Limits(wall_s=20, max_processes=32)).run_python(_FORKER)
    assert capped.ok and "refused 11" in capped.stdout, capped  # EAGAIN at the cap
    forked = int(capped.stdout.split("forked")[1])
    assert 20 <= forked < 32  # bubblewrap, its init and the interpreter count too
    left = [p for p in os.listdir(pids_cgroup_root()) if p.startswith("ponder-sbx-")]
    assert not left, f"cgroups left behind: {left}"


def _sleepers() -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum("time.sleep(120)" in line for line in out.splitlines())


def test_code_verifier_runs_in_the_sandbox():
    leak = CodeVerifier("assert open('/etc/passwd').read()").verify("", "x = 1", None)
    assert not leak.passed and "FileNotFoundError" in leak.feedback
    ok = CodeVerifier("assert f(3) == 9").verify("", "```python\ndef f(x):\n    return x * x\n```", None)
    assert ok.passed


def test_without_bubblewrap_the_verifier_refuses_rather_than_running_unconfined(monkeypatch):
    import ponder.verifiers.sandbox as sb

    monkeypatch.setattr(sb.shutil, "which", lambda name: None)
    sb.unavailable_reason.cache_clear()
    try:
        v = CodeVerifier("pass").verify("", "print('hi')", None)
        assert not v.passed and "bubblewrap" in v.feedback
    finally:
        sb.unavailable_reason.cache_clear()



def test_writes_are_bounded_in_total_not_only_per_file():
    """/tmp and /work are memory-backed: each is a tmpfs of Limits.disk_mb, so many files under the per-file
    limit cannot add up to more (before, 768 MiB went to /tmp and 384 MiB to /work in under a second)."""
    probe = ("out = {}\n"
             "for where in ('/tmp', os.getcwd()):\n"
             "    total = 0\n"
             "    try:\n"
             "        for i in range(64):\n"
             "            with open(f'{where}/f{i}', 'wb') as f:\n"
             "                for _ in range(8):\n"
             "                    f.write(b'x' * (1 << 20)); f.flush(); total += 1\n"
             "    except OSError as e:\n"
             "        out[where] = [total, type(e).__name__]\n"
             "    else:\n"
             "        out[where] = [total, 'none']\n"
             "print(json.dumps(out))")
    box = Sandbox(Limits(wall_s=20, cpu_s=10, memory_mb=256, file_mb=16, disk_mb=24))
    got = run(probe, box)
    assert sorted(got) == ["/tmp", "/work"], got
    for where, (mib, error) in got.items():
        assert mib <= 24 and error == "OSError", (where, mib, error)  # stopped at the mount's size, with an error
