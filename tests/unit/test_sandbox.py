"""The python tool's sandbox: every escape below is really attempted and must fail safely.

Small limits keep the file fast (a few seconds in all)."""

import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from chatloop.tools.sandbox import SandboxLimits, namespace_prefix, run_python
from conftest import run_async

LIMITS = SandboxLimits(cpu_s=2, wall_s=4, memory_mb=256, file_mb=1, open_files=32, processes=8, output_bytes=10_000)


@pytest.fixture
def scratch_root(tmp_path):
    root = tmp_path / "scratch"
    root.mkdir()
    return root


def run(code, scratch_root, limits=LIMITS):
    return run_async(run_python(code, scratch_root=scratch_root, limits=limits))


def test_print_returns_stdout_and_the_scratch_dir_is_removed(scratch_root):
    result = run("import os\nprint('hello', 2**100)\nprint(os.getcwd())\nopen('note.txt', 'w').write('x')",
                 scratch_root)
    assert result.exit_code == 0 and result.killed is None, result.report()
    lines = result.stdout.splitlines()
    assert lines[0] == "hello 1267650600228229401496703205376"
    assert lines[1].startswith(str(scratch_root.resolve()))  # it ran in a directory of its own
    assert list(scratch_root.iterdir()) == []  # which is gone, with what the code wrote


def test_an_exception_gives_a_traceback_and_a_nonzero_exit(scratch_root):
    result = run("def f():\n    return 1 / 0\nf()", scratch_root)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError: division by zero" in result.stderr
    assert 'main.py", line 2, in f' in result.stderr
    assert result.stderr.splitlines()[1].strip().endswith('main.py", line 3, in <module>')  # the code's frames only


def test_writing_outside_the_scratch_dir_fails(scratch_root, tmp_path):
    outside = tmp_path / "escape.txt"
    for code in (f"open({str(outside)!r}, 'w').write('x')",
                 "open('../x', 'w').write('x')",
                 "import os; os.symlink('..', 'up'); open('up/x', 'w').write('x')",
                 f"import os; os.rename('main.py', {str(outside)!r})",
                 f"import os; fd = os.open({str(outside)!r}, os.O_WRONLY | os.O_CREAT)",
                 f"import shutil; shutil.copyfile('main.py', {str(outside)!r})"):
        result = run(code, scratch_root)
        assert result.exit_code != 0, code
        assert "PermissionError: sandbox:" in result.stderr, (code, result.stderr)
    assert not outside.exists() and not (scratch_root / "x").exists() and not (tmp_path / "x").exists()


def test_reading_the_servers_files_and_environment_fails(scratch_root):
    for path in (f"/proc/{os.getpid()}/environ", "/etc/passwd", str(scratch_root.parent)):
        result = run(f"import os\nprint(open({path!r}).read() if os.path.isfile({path!r}) else os.listdir({path!r}))",
                     scratch_root)
        assert result.exit_code != 0 and "PermissionError: sandbox: reading" in result.stderr, (path, result.stderr)
    # ...while the standard library still imports
    result = run("import json, decimal, zoneinfo, statistics\nprint(statistics.mean([1, 2, 3]))", scratch_root)
    assert result.stdout == "2\n", result.stderr


def test_the_environment_holds_nothing_of_the_server(scratch_root, monkeypatch):
    monkeypatch.setenv("CHATLOOP_SECRET_KEY", "do-not-leak")
    result = run("import os; print(sorted(os.environ))", scratch_root)
    assert "CHATLOOP" not in result.stdout and "do-not-leak" not in result.stdout
    assert eval(result.stdout) == ["HOME", "LANG", "PATH", "TMPDIR"]  # noqa: S307 - our own output


def test_sockets_fail(scratch_root):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        for code in (f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)",
                     "import socket; socket.getaddrinfo('example.com', 80)",
                     "import urllib.request; urllib.request.urlopen('http://127.0.0.1:1', timeout=1)"):
            result = run(code, scratch_root)
            assert result.exit_code != 0 and "sandbox: socket." in result.stderr, (code, result.stderr)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected
    finally:
        server.close()


def test_the_network_namespace_blocks_sockets_even_without_the_audit_hook():
    prefix = run_async(namespace_prefix())
    if not prefix:
        pytest.skip("this user cannot create a network namespace (unshare -rn); only the audit hook blocks sockets")
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    try:
        code = f"import socket; socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=1)"
        done = subprocess.run([*prefix, sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and "Error" in done.stderr
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def _processes_in(root: Path) -> list[int]:
    """Processes whose working directory lies under `root`: what sandboxed code started runs in its scratch
    directory (the sandbox strips its own environment variables, so the cwd is the mark). Counting every
    process would count other tests' too."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if cwd.startswith(str(root.resolve())):
            found.append(int(pid))
    return found


def test_fork_bombs_and_subprocesses_fail_and_leave_nothing_running(scratch_root):
    for code in ("import os\nwhile True:\n    os.fork()",
                 "import subprocess\nwhile True:\n    subprocess.Popen(['sleep', '100'])",
                 "import os; os.system('sleep 100 &')",
                 "import os; os.posix_spawn('/bin/sleep', ['sleep', '100'], {})",
                 "import os; os.execv('/bin/sleep', ['sleep', '100'])",
                 "import multiprocessing; multiprocessing.Process(target=print).start()",
                 "import ctypes; ctypes.CDLL(None).fork()"):
        result = run(code, scratch_root)
        assert result.exit_code not in (0, None) and "sandbox:" in result.stderr, (code, result.report())
    assert _processes_in(scratch_root) == []
    assert result.duration_s < 10


def test_the_kernel_limits_are_set(scratch_root):
    code = ("import resource as r\n"
            "print([r.getrlimit(getattr(r, n)) for n in ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE')])\n"
            "print(r.getrlimit(r.RLIMIT_NPROC)[0] < 10**6)")
    result = run(code, scratch_root)
    assert result.stdout.splitlines() == [str([(2, 3), (256 << 20,) * 2, (1 << 20,) * 2, (32, 32)]), "True"]
    result = run("import resource as r; r.setrlimit(r.RLIMIT_CPU, (100, 100))", scratch_root)
    assert result.exit_code != 0 and "sandbox: resource.setrlimit" in result.stderr


def test_a_busy_loop_is_killed_by_the_cpu_limit(scratch_root):
    # 1 CPU second, and a wall limit this busy loop never reaches even on a loaded machine
    result = run("while True:\n    pass", scratch_root, replace(LIMITS, cpu_s=1, wall_s=30))
    assert result.exit_code is not None and result.exit_code < 0, result.report()  # SIGXCPU / SIGKILL
    assert "killed by SIGXCPU" in result.report()


def test_sleeping_is_killed_by_the_wall_clock_limit(scratch_root):
    started = time.monotonic()
    result = run("import time; time.sleep(100)", scratch_root)
    assert result.killed == "timeout" and result.exit_code is None
    assert time.monotonic() - started < LIMITS.wall_s + 10
    assert list(scratch_root.iterdir()) == []


def test_allocating_4_gb_fails_with_memory_error(scratch_root):
    result = run("x = bytearray(4 * 10**9)", scratch_root)
    assert result.exit_code == 1 and "MemoryError" in result.stderr


def test_writing_a_huge_file_fails(scratch_root):
    result = run("open('big', 'wb').write(b'x' * (2 << 20))", scratch_root)
    assert result.exit_code == 1 and "File too large" in result.stderr


def test_a_flood_of_output_is_cut_and_the_child_killed_not_buffered(scratch_root):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    result = run("print('x' * 10**8)", scratch_root)
    assert result.killed == "output" and result.truncated
    assert len(result.stdout) <= LIMITS.output_bytes
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000, "the flood was buffered here"
    assert "[output truncated]" in result.report()
