"""Run model-written Python where it cannot reach anything that matters.

Code written by a model is hostile input.  It runs under bubblewrap (Debian's
``bubblewrap``; ``make test`` installs it) in fresh user, PID, mount, network,
IPC and UTS namespaces, as the unprivileged user 65534 (nobody), with:

* an empty environment (no API keys, no proxies) and ``PATH=/usr/bin:/bin``;
* a read-only view of ``/usr`` and of the Python installation, nothing else of
  the host: no ``/etc``, no ``/home``, no ``/root``, no gateway files;
* a private, writable working directory (``/work``) and ``/tmp`` that vanish
  afterwards;
* no network (only its own loopback), no view of other processes, so it can
  neither connect out nor signal anything outside;
* ``no_new_privs`` (set by bubblewrap), a new session (no terminal injection),
  and the CPU, address-space, file-size and wall-clock limits of ``Limits``;
* a cap on processes (``Limits.max_processes``) from a cgroup of its own in
  the ``pids`` controller, where this host lets ponder create one: a fork
  bomb then fails at its first fork past the cap instead of filling the
  host's PID table until the wall clock runs out.  ``RLIMIT_NPROC`` cannot
  do this job: the sandbox's user maps to the caller, and for root the
  kernel does not enforce it.

Without bubblewrap the sandbox refuses to run code (``SandboxUnavailable``)
instead of quietly running it unconfined; ``Sandbox(isolation="none")`` is an
explicit opt-out for trusted single-user setups.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
_PY_MOUNT = "/opt/python"
_KEEP_OUTPUT = 64 << 10


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    file_mb: int = 16
    #: processes at once, bubblewrap's own included (needs the pids cgroup; see ``pids_cgroup_root``)
    max_processes: int = 64
    #: size of each of ``/work`` and ``/tmp`` (memory-backed: without a size they would be bounded by nothing)
    disk_mb: int = 32


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _python() -> tuple[str, str | None]:
    """(path of the interpreter inside the sandbox, host prefix to bind or None)."""
    prefix = os.path.realpath(sys.base_prefix)
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    if prefix.startswith("/usr/") or prefix == "/usr":
        return exe, None
    rel = os.path.relpath(exe, prefix)
    if rel.startswith(".."):
        raise SandboxUnavailable(f"the interpreter {exe} is not under its prefix {prefix}")
    return f"{_PY_MOUNT}/{rel}", prefix


def _bwrap_args(workdir: str, disk_mb: int = 32) -> list[str]:
    exe, prefix = _python()
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--uid", str(NOBODY), "--gid", str(NOBODY), "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "sbin"):
        target = os.readlink(f"/{name}") if os.path.islink(f"/{name}") else None
        if target is not None:
            args += ["--symlink", target, f"/{name}"]
        elif os.path.isdir(f"/{name}"):
            args += ["--ro-bind", f"/{name}", f"/{name}"]
    if prefix is not None:
        args += ["--ro-bind", prefix, _PY_MOUNT, "--setenv", "LD_LIBRARY_PATH", f"{_PY_MOUNT}/lib"]
    size = str(disk_mb << 20)
    # /work and /tmp are sized tmpfs: the code (read-only) is the only host file inside
    args += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/work",
             "--ro-bind", f"{workdir}/main.py", "/work/main.py", "--chdir", "/work",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/work", "--setenv", "PYTHONDONTWRITEBYTECODE",
             "1", "--remount-ro", "/", "--", exe, "-I", "-S"]
    return args


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None when bubblewrap works here, else why not (probed once per process)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed; on Debian: apt-get install bubblewrap"
    with tempfile.TemporaryDirectory(prefix="ponder-sbx-") as tmp:
        os.chmod(tmp, 0o777)
        try:
            Path(tmp, "main.py").write_text("")
            p = subprocess.run(_bwrap_args(tmp) + ["-c", "pass"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired, SandboxUnavailable) as exc:
            return f"bubblewrap failed: {exc}"
    if p.returncode != 0:
        return f"bubblewrap cannot create its namespaces here: {p.stderr.strip()[-300:]}"
    return None


@functools.lru_cache(maxsize=1)
def pids_cgroup_root() -> str | None:
    """The ``pids`` cgroup directory ponder may make child groups in, or None (then no process cap).

    cgroup v1: this process's group in the ``pids`` hierarchy.  cgroup v2: this process's group when it
    delegates ``pids`` to its children.  Probed once, by making and removing a group."""
    base = None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            base = Path("/sys/fs/cgroup/pids") / path.lstrip("/")
            break
    else:
        for line in lines:
            if line.startswith("0::"):
                cand = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
                try:
                    if "pids" in (cand / "cgroup.subtree_control").read_text().split():
                        base = cand
                except OSError:
                    pass
    if base is None:
        return None
    probe = base / f"ponder-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        (probe / "pids.max").write_text("8")
    except OSError:
        return None
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass
    return str(base)


class _PidsGroup:
    """One run's cgroup in the pids controller: caps its processes, kills them all, and goes away."""

    def __init__(self, max_processes: int) -> None:
        root = pids_cgroup_root()
        self.path: Path | None = None
        if root is None:
            return
        path = Path(root) / f"ponder-sbx-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_processes))
            self.path = path
        except OSError:
            self._remove(path)

    def enter(self) -> None:
        """In the child, before exec: join the group (so bubblewrap and all it starts count)."""
        if self.path is not None:
            with open(self.path / "cgroup.procs", "w") as fh:
                fh.write("0")

    def kill_all(self) -> None:
        if self.path is None:
            return
        for _ in range(50):
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                return
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def close(self) -> None:
        if self.path is not None:
            self.kill_all()
            self._remove(self.path)
            self.path = None

    @staticmethod
    def _remove(path: Path) -> None:
        for _ in range(100):  # a killed process leaves its group a moment after it dies
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)


def _limit(limits: Limits, group: _PidsGroup):
    def apply() -> None:
        import resource

        group.enter()
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb << 20, limits.memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb << 20, limits.file_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _tail(path: Path) -> str:
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - _KEEP_OUTPUT))
        return fh.read().decode("utf-8", "replace")


@dataclass(frozen=True)
class Sandbox:
    """Runs a Python program in isolation; one instance may be shared by threads."""

    limits: Limits = Limits()
    isolation: str = "bwrap"  # or "none": no isolation at all, only the limits (explicit opt-out)

    def run_python(self, code: str, stdin: str = "") -> Completed:
        if self.isolation not in ("bwrap", "none"):
            raise ValueError(f"unknown isolation {self.isolation!r}; choose bwrap or none")
        if self.isolation == "bwrap":
            reason = unavailable_reason()
            if reason is not None:
                raise SandboxUnavailable(reason)
        with tempfile.TemporaryDirectory(prefix="ponder-code-") as host:
            work = Path(host) / "work"
            work.mkdir()
            os.chmod(work, 0o777)  # nobody writes here, and only here
            (work / "main.py").write_text(code)
            out, err = Path(host) / "stdout", Path(host) / "stderr"
            if self.isolation == "bwrap":
                cmd = _bwrap_args(str(work), self.limits.disk_mb) + ["main.py"]
                cwd, env = host, {}
            else:
                cmd = [sys.executable, "-I", "main.py"]
                cwd, env = str(work), {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
            # stdout/stderr go to files, so the file-size limit also bounds what a runaway print can produce
            group = _PidsGroup(self.limits.max_processes)
            try:
                with out.open("wb") as fo, err.open("wb") as fe:
                    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=fo, stderr=fe,
                                            preexec_fn=_limit(self.limits, group), start_new_session=True)
                    timed_out = False
                    try:
                        proc.communicate(stdin.encode(), timeout=self.limits.wall_s)
                    except subprocess.TimeoutExpired:
                        timed_out = True
                        # bwrap is the PID namespace's parent: killing it takes every process inside down
                        try:
                            os.killpg(proc.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        proc.wait()
            finally:
                group.close()  # whatever is left (a daemonised child without isolation) dies with its group
            return Completed(proc.returncode, _tail(out), _tail(err), timed_out)
