"""Run a piece of Python for the `python` tool, in a child interpreter under limits.

    result = await run_python("print(2**100)", scratch_root=Path("~/.chatloop/scratch"),
                              limits=SandboxLimits())
    result.stdout, result.stderr, result.exit_code, result.killed

Layers, from the hardest to the softest (docs/builtin-tools.md, "What the sandbox isolates"):

1. Network namespace: when `unshare --user --map-root-user --net` works for this user (probed
   once), the child runs in a namespace of its own with no network interface but loopback — no
   socket reaches anything outside, whatever the code does.
2. Kernel resource limits, set by the child on itself before the user's code runs (so no Python
   code runs between fork and exec in the server): CPU seconds, address space, file size, open
   files and processes; plus a wall-clock timeout here that kills the child's whole process group,
   and a cap on the output read (a flood is cut and the child killed, never buffered here).
3. A fresh scratch directory as the working directory, HOME and TMPDIR, removed afterwards, and a
   minimal environment (nothing of the server's: no CHATLOOP_* settings, no keys).
4. An audit hook in the child (sandbox_child.py) refusing sockets, processes, ctypes, and file
   writes outside the scratch directory. It is a guard rail, not a boundary.

The code goes to the child as a file (`main.py` in the scratch directory); nothing is passed
through a shell.
"""

import asyncio
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("sandbox_child.py")
READ_CHUNK = 65_536


@dataclass(frozen=True)
class SandboxLimits:
    """What one run of the python tool may use."""

    cpu_s: int = 10  # CPU seconds (RLIMIT_CPU); the kernel kills the child past it
    wall_s: float = 20.0  # wall-clock seconds before the process group is killed
    memory_mb: int = 1024  # address space (RLIMIT_AS): a bigger allocation raises MemoryError
    file_mb: int = 16  # largest file the code may write (RLIMIT_FSIZE)
    open_files: int = 64  # open descriptors (RLIMIT_NOFILE)
    processes: int = 16  # tasks (threads included) beyond those this user runs already (RLIMIT_NPROC)
    output_bytes: int = 64_000  # stdout and stderr, each; more is cut and the child killed


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None: killed by us (see `killed`); negative: killed by that signal
    killed: str | None = None  # "timeout" or "output" when we stopped it
    truncated: bool = False  # stdout or stderr was cut at output_bytes
    duration_s: float = 0.0
    network_isolated: bool = False  # ran in a network namespace of its own

    def report(self) -> str:
        """The result as the model reads it."""
        if self.killed == "timeout":
            status = "killed: the wall-clock limit was reached"
        elif self.killed == "output":
            status = "killed: the output limit was reached"
        elif self.exit_code is not None and self.exit_code < 0:
            name = signal.Signals(-self.exit_code).name if -self.exit_code in signal.Signals.__members__.values() else ""
            why = {"SIGXCPU": " (the CPU time limit)", "SIGKILL": " (a resource limit)"}.get(name, "")
            status = f"killed by {name or -self.exit_code}{why}"
        else:
            status = f"exit status {self.exit_code}"
        parts = [status]
        if self.stdout:
            parts.append("stdout:\n" + self.stdout)
        if self.stderr:
            parts.append("stderr:\n" + self.stderr)
        if self.truncated:
            parts.append("[output truncated]")
        return "\n".join(parts)


_unshare: list[str] | None = None  # the namespace prefix once probed ([] when unavailable)


async def namespace_prefix() -> list[str]:
    """The command prefix that gives the child a network namespace of its own, or [] where this
    user cannot create one (no `unshare`, or user namespaces disabled)."""
    global _unshare
    if _unshare is None:
        prefix = ["unshare", "--user", "--map-root-user", "--net", "--"]
        exe = shutil.which("unshare")
        works = False
        if exe:
            prefix[0] = exe
            proc = await asyncio.create_subprocess_exec(*prefix, sys.executable, "-c", "", env={},
                                                        stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.DEVNULL)
            works = await proc.wait() == 0
        _unshare = prefix if works else []
    return _unshare


async def run_python(code: str, *, scratch_root: Path, limits: SandboxLimits) -> SandboxResult:
    """Run `code` as a program in a fresh scratch directory; always returns (never raises for what
    the code does), and always removes the scratch directory."""
    scratch_root = Path(scratch_root).expanduser()
    scratch_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=scratch_root)).resolve()
    try:
        (scratch / "main.py").write_text(code, encoding="utf-8")
        prefix = await namespace_prefix()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
               "SANDBOX_LIMITS": ",".join(str(v) for v in (limits.cpu_s, limits.memory_mb, limits.file_mb,
                                                             limits.open_files, limits.processes))}
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-I", "-B", "-X", "utf8", str(CHILD),
            cwd=scratch, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, killed as one
        )
        result = await _collect(proc, limits)
        result.duration_s = time.monotonic() - started
        result.network_isolated = bool(prefix)
        return result
    finally:
        await asyncio.to_thread(_remove, scratch)


async def _collect(proc: asyncio.subprocess.Process, limits: SandboxLimits) -> SandboxResult:
    flooded = asyncio.Event()
    cut = [False]

    async def read(stream: asyncio.StreamReader) -> bytes:
        kept = bytearray()
        # Read to the end even past the cap (dropping the rest) while the child is being killed: a
        # reader that stopped would leave the pipe paused and its end never seen.
        while chunk := await stream.read(READ_CHUNK):
            room = limits.output_bytes - len(kept)
            if len(chunk) > room:
                cut[0] = True
                flooded.set()
            kept += chunk[:max(room, 0)]
        return bytes(kept)

    readers = asyncio.gather(read(proc.stdout), read(proc.stderr))
    flood = asyncio.ensure_future(flooded.wait())
    deadline = time.monotonic() + limits.wall_s
    killed, exit_code = None, None
    try:
        done, _ = await asyncio.wait({readers, flood}, timeout=limits.wall_s, return_when=asyncio.FIRST_COMPLETED)
        if readers in done:
            try:  # it closed its output; it still has until the deadline to exit
                exit_code = await asyncio.wait_for(proc.wait(), max(deadline - time.monotonic(), 0.1))
            except TimeoutError:
                killed = "timeout"
        else:
            killed = "output" if flood in done else "timeout"
    finally:
        flood.cancel()
        if exit_code is None:  # killed, or we are being cancelled: nothing of it may outlive the call
            _kill_group(proc)
            await asyncio.wait({readers}, timeout=5)
            await asyncio.wait({asyncio.ensure_future(proc.wait())}, timeout=5)
    if not readers.done():
        readers.cancel()
    out, err = readers.result() if readers.done() and not readers.cancelled() else (b"", b"")
    return SandboxResult(out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), exit_code, killed, cut[0])


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone


def _remove(scratch: Path) -> None:
    """Remove the scratch directory, even where the code took away its own permissions."""

    def retry(func, path, _exc):
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
            shutil.rmtree(path, onerror=retry)
        else:
            func(path)

    shutil.rmtree(scratch, onerror=retry)
