"""xdist workers of in-process inner runs, forked from a warm interpreter (tests only).

An inner ``pytest -n 2`` run started by ``pytester`` in this process starts two fresh
interpreters, each importing pytest, xdist, numpy, pydantic and the plugin before it runs a
case: most of such a run's time on a small machine, and about a hundred runs do it. Here a
*zygote* process imports those once per session; each worker is a ``fork`` of it that takes the
pipes execnet made for it and runs execnet's bootstrap line as ``python -u -c`` would. The
controller (this process) still drives real xdist workers through real execnet channels; only
the interpreter's start is skipped. A worker's pid, signals, exit code and death are its own,
as with ``subprocess.Popen``, so the plugin's handling of crashed and stopped workers is the
same; at its end only the interpreter's finalization is skipped (threads are joined, atexit
handlers run and the streams are flushed, as at a normal exit). Spawns the zygote cannot
stand for (another interpreter, ``via``, an environment whose interpreter-level variables
differ from the zygote's, assertion rewriting on) start a real process, and
``RAGBENCH_TESTS_REAL_WORKERS=1`` turns forking off.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

#: Environment variables read at interpreter start: a spawn whose values differ from the
#: zygote's starts a real process.
STARTUP_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONNOUSERSITE",
                     "PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONDEVMODE", "PYTHONUTF8",
                     "PYTHONIOENCODING", "PYTHONFAULTHANDLER", "PYTHONTRACEMALLOC",
                     "PYTHONASYNCIODEBUG", "PYTHONPROFILEIMPORTTIME", "PYTHONOPTIMIZE",
                     "PYTHONMALLOC", "PYTHONINSPECT", "PYTHONVERBOSE", "PYTHONUSERBASE",
                     "PYTHONPLATLIBDIR", "PYTHONINTMAXSTRDIGITS", "PYTHONWARNDEFAULTENCODING",
                     "PYTHONDONTWRITEBYTECODE")

#: What every xdist worker of an inner run imports, imported by the zygote once. Only what a
#: worker imports whatever it runs: tests that check what a worker leaves unimported (the
#: suite's YAML and schema when the controller hands it the validated suite) stay true.
WARM_MODULES = ("execnet", "execnet.gateway_base", "pytest", "xdist.plugin", "xdist.remote",
                "xdist.looponfail", "pytest_asyncio.plugin", "numpy", "pygments.lexers.python",
                "pygments.formatters.terminal", "pytest_ragbench.plugin",
                # pytest's default plugins that `import pytest` leaves to each configuration
                "_pytest.unittest", "_pytest.junitxml", "_pytest.skipping", "_pytest.helpconfig",
                "_pytest.unraisableexception", "_pytest.threadexception", "_pytest.warnings",
                "_pytest.pastebin", "pytest_ragbench.fixtures", "pytest_ragbench.headstart")


class ForkedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """A worker forked by the zygote, seen through ``subprocess.Popen``'s interface (execnet
    and the plugin's worker handling use ``pid``, ``poll``, ``wait``, ``kill``,
    ``send_signal`` and ``returncode``)."""

    def __init__(self, args: list[str], pid: int, stdin: int, stdout: int,
                 status: socket.socket, pending: bytes = b"") -> None:
        # no super().__init__: nothing to start
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = os.fdopen(stdin, "wb")  # buffered, as Popen makes them
        self.stdout = os.fdopen(stdout, "rb")
        self.stderr = None
        self._status = status
        # what the waiter sent after the pid: a worker that ends at once can have its
        # status read with its pid, in one chunk
        self._pending = pending
        self._child_created = False  # Popen.__del__ has nothing to reap: the zygote does
        self._lock = threading.Lock()

    def _read_status(self, timeout: float | None) -> int | None:
        # The lock is taken only to read a status already there: execnet waits for a worker
        # in one thread while the plugin polls it from another.
        if self.returncode is None:
            ready = self._pending or select.select([self._status], [], [], timeout)[0]
            if ready:
                with self._lock:
                    if self.returncode is None:
                        data, self._pending = self._pending, b""
                        while not data.endswith(b"\n"):
                            chunk = self._status.recv(64)
                            if not chunk:  # the waiter is gone without a word: as if killed
                                break
                            data += chunk
                        self.returncode = (os.waitstatus_to_exitcode(int(data)) if data.strip()
                                           else -int(signal.SIGKILL))
        return self.returncode

    def poll(self) -> int | None:
        return self._read_status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._read_status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __del__(self) -> None:
        pass


class Zygote:
    """One warm interpreter per test session that forks xdist workers on request."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._env = dict(os.environ)
        self._lock = threading.Lock()
        self._broken = False

    def _start(self) -> socket.socket | None:
        if self._control is None and not self._broken:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self._process = subprocess.Popen(
                [sys.executable, "-u", str(Path(__file__).resolve()), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=self._env,
                cwd="/")  # "" on its sys.path must not find a test's files
            theirs.close()
            ready = ours.recv(16)
            if ready != b"ready\n":
                self._broken = True
                ours.close()
                return None
            self._control = ours
        return self._control

    def can_fork(self, spec: Any) -> bool:
        if os.environ.get("RAGBENCH_TESTS_REAL_WORKERS") or self._broken:
            return False
        if not spec.popen or spec.python or spec.via or sys.platform != "linux":
            return False
        if "--assert=plain" not in os.environ.get("PYTEST_ADDOPTS", ""):
            return False  # the zygote's warm plugin modules could not be rewritten
        return all(os.environ.get(k) == self._env.get(k) for k in STARTUP_VARIABLES)

    def spawn(self, args: list[str], dont_write_bytecode: bool) -> ForkedPopen | None:
        """Fork a worker that runs ``args``' ``-c`` code with fresh pipes; None when the
        zygote cannot (the caller starts a real process)."""
        with self._lock:
            control = self._start()
            if control is None:
                return None
            stdin_r, stdin_w = os.pipe()
            stdout_r, stdout_w = os.pipe()
            status_ours, status_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            request = json.dumps({"code": args[args.index("-c") + 1], "cwd": os.getcwd(),
                                  "env": dict(os.environ), "B": dont_write_bytecode})
            try:
                socket.send_fds(control, [request.encode() + b"\n"],
                                [stdin_r, stdout_w, status_theirs.fileno(), 2])
                line = b""
                while b"\n" not in line:
                    chunk = status_ours.recv(64)
                    if not chunk:
                        raise OSError("the zygote's waiter gave no pid")
                    line += chunk
            except OSError:
                self._broken = True
                for fd in (stdin_r, stdin_w, stdout_r, stdout_w):
                    os.close(fd)
                status_ours.close()
                return None
            finally:
                status_theirs.close()
            os.close(stdin_r)
            os.close(stdout_w)
            pid, _, rest = line.partition(b"\n")
            return ForkedPopen(args, int(pid), stdin_w, stdout_r, status_ours, rest)

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            self._process.terminate()
            self._process.wait()
            self._process = None


def install(zygote: Zygote, monkeypatch: Any) -> None:
    """Route eligible popen gateways of execnet through ``zygote`` (undone by monkeypatch)."""
    from execnet import gateway_io

    original = gateway_io.create_io

    def create_io(spec: Any, execmodel: Any) -> Any:
        if zygote.can_fork(spec) and execmodel.backend in ("thread", "main_thread_only"):
            args = gateway_io.popen_args(spec)
            popen = zygote.spawn(args, bool(spec.dont_write_bytecode))
            if popen is not None:
                io = gateway_io.Popen2IOMaster.__new__(gateway_io.Popen2IOMaster)
                io.popen = popen
                gateway_io.Popen2IO.__init__(io, popen.stdin, popen.stdout, execmodel=execmodel)
                return io
        return original(spec, execmodel=execmodel)

    monkeypatch.setattr(gateway_io, "create_io", create_io)


# -- the zygote's side ------------------------------------------------------------------------

def _serve(control_fd: int) -> dict[str, Any]:
    """Import :data:`WARM_MODULES`, then fork a worker per request. Returns (in the worker
    only) the request to run; the zygote itself leaves by SystemExit when its session ends."""
    import importlib
    import warnings

    sys.path[0:1] = [""]  # as ``python -c`` has it (the workers' view of sys.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in WARM_MODULES:
            importlib.import_module(name)
    import gc

    gc.collect()
    gc.freeze()  # the workers share these pages and their collections skip them
    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # waiters are reaped by the kernel
    control.sendall(b"ready\n")
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(control, 1 << 20, 4)
        except OSError:
            sys.exit(0)
        if not msg:
            sys.exit(0)
        buf = msg
        while not buf.endswith(b"\n"):
            more = control.recv(1 << 20)
            if not more:
                sys.exit(0)
            buf += more
        request = json.loads(buf)
        stdin_fd, stdout_fd, status_fd, stderr_fd = fds
        if os.fork() == 0:  # the waiter: forks the worker, reports its pid and its end
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            status = socket.socket(fileno=status_fd)
            pid = os.fork()
            if pid == 0:
                status.close()
                os.dup2(stdin_fd, 0)
                os.dup2(stdout_fd, 1)
                os.dup2(stderr_fd, 2)
                for fd in (stdin_fd, stdout_fd, stderr_fd):
                    os.close(fd)
                return request
            for fd in (stdin_fd, stdout_fd, stderr_fd):
                os.close(fd)
            status.sendall(f"{pid}\n".encode())
            _, wait_status = os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                status.sendall(f"{wait_status}\n".encode())
            os._exit(0)
        for fd in fds:
            os.close(fd)


def _run_worker(request: dict[str, Any]) -> None:
    """Become what ``python -u -c CODE`` started in ``cwd`` with ``env`` would be."""
    import random
    import types

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # Python ignores SIGPIPE at start
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.dont_write_bytecode = bool(request["B"]) or bool(os.environ.get(
        "PYTHONDONTWRITEBYTECODE"))
    sys.argv = ["-c"]
    random.seed()
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    try:
        exec(compile(request["code"], "<string>", "exec"), main.__dict__)
    except SystemExit as stop:
        code = _exit_code(stop)
    else:
        code = 0
    # What a normal exit does before the interpreter's finalization (which only tears down
    # modules and frees the zygote's warm heap: 60 ms per worker, waited for by the
    # controller's teardown of its nodes): wait for non-daemon threads, run atexit handlers,
    # flush the standard streams.
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _exit_code(stop: SystemExit) -> int:
    """The exit status Python gives a ``SystemExit`` that ends the interpreter."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code & 0xFF
    with contextlib.suppress(Exception):
        print(stop.code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    _run_worker(_serve(int(sys.argv[1])))
