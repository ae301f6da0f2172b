"""The first code the sandboxed interpreter runs (see sandbox.py): it installs an audit hook, then
runs the user's program, `main.py` in the current (scratch) directory, as `__main__`.

    python -I -B -X utf8 sandbox_child.py        # cwd = the scratch directory; never run by hand

The hook refuses what the python tool has no business doing: sockets and name lookups, starting
processes (fork, exec, spawn, subprocess, os.system), loading native code through ctypes, writing
or changing files outside the scratch directory, reading files outside the scratch directory and
the Python installation, and reaching the hook itself (gc's object walks, tracing). It is a guard
rail, not a security boundary: the resource limits and the network namespace set up by sandbox.py
are the hard limits (docs/builtin-tools.md says what holds and what does not).

This file imports nothing from chatloop: it runs in the child, under `-I`, before anything else.
"""

import os
import sys
import sysconfig

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# Events refused whatever their arguments.
REFUSED = {
    "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.startfile",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.settrace", "sys.setprofile",
    "sys._current_frames", "cpython.PyInterpreterState_New",
    "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
    "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr",
    "socket.getnameinfo", "socket.getservbyname", "socket.getservbyport", "socket.sethostname",
    "resource.setrlimit", "resource.prlimit", "ctypes.dlopen", "ctypes.dlsym",
}
# Native modules whose import would hand out what REFUSED forbids (fork_exec has no audit event).
REFUSED_IMPORTS = {"_ctypes", "ctypes", "_posixsubprocess", "_xxsubinterpreters", "_multiprocessing"}
# Events whose first argument (and for renames and links the second) is a path being changed.
CHANGES = {
    "os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.link", "os.symlink", "os.chmod", "os.chown",
    "os.truncate", "os.utime", "os.setxattr", "os.removexattr", "os.mkfifo", "os.mknod", "shutil.rmtree",
    "shutil.move", "shutil.copyfile", "shutil.copytree",
}
READS = {"os.listdir", "os.scandir", "os.getxattr", "os.listxattr", "glob.glob"}


def _install(scratch: str) -> None:
    readable = [scratch, "/usr/share/zoneinfo", "/etc/localtime", "/dev/null", "/dev/urandom", "/dev/zero"]
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        readable.append(os.path.realpath(sysconfig.get_paths()[key]))
    readable = tuple(sorted(set(readable)))
    realpath, fspath, isabs, sep = os.path.realpath, os.fspath, os.path.isabs, os.sep

    def inside(path, roots, dir_fd=None) -> bool:
        if isinstance(path, int):  # an open descriptor: it was allowed when it was opened
            return True
        path = fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if dir_fd not in (None, -100) and not isabs(path):  # relative to a directory descriptor
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        path = realpath(path)
        return any(path == root or path.startswith(root + sep) for root in roots)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, _mode, flags = args
            if path is None:
                return
            writes = flags & WRITE_FLAGS
            if not inside(path, (scratch,) if writes else readable):
                raise PermissionError(f"sandbox: {'writing' if writes else 'reading'} {path!s} is not "
                                      f"allowed (use the current directory)")
        elif event == "import":
            if args[0] in REFUSED_IMPORTS or args[0].split(".")[0] in REFUSED_IMPORTS:
                raise ImportError(f"sandbox: module {args[0]} is not available")
        elif event in REFUSED:
            if event in ("os.kill", "os.killpg") and args[0] in (0, os.getpid()):
                return  # signalling itself (e.g. os.kill(os.getpid(), SIGTERM)) is harmless
            raise PermissionError(f"sandbox: {event} is not allowed (no network, no processes)")
        elif event in CHANGES:
            paths = [args[0]] + ([args[1]] if event in ("os.rename", "os.link", "shutil.move",
                                                          "shutil.copyfile", "shutil.copytree") else [])
            dir_fd = args[-1] if event in ("os.remove", "os.rmdir", "os.mkdir") else None
            for path in paths:
                if path is not None and not inside(path, (scratch,), dir_fd if path is args[0] else None):
                    raise PermissionError(f"sandbox: changing {path!s} is not allowed (use the current directory)")
        elif event in READS:
            if args and args[0] is not None and not inside(args[0], readable):
                raise PermissionError(f"sandbox: reading {args[0]!s} is not allowed")

    sys.addaudithook(hook)


def _limit() -> None:
    """Apply the limits sandbox.py passed (CPU s, memory MB, file MB, open files, processes)."""
    import resource

    cpu, memory, file, files, processes = (int(v) for v in os.environ.pop("SANDBOX_LIMITS").split(","))
    uid = os.getuid()
    tasks = 0  # RLIMIT_NPROC counts every task of this user, so it is "what runs now + processes"
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                tasks += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue  # gone meanwhile, or not a process
    for which, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, memory << 20),
                         (resource.RLIMIT_FSIZE, file << 20), (resource.RLIMIT_NOFILE, files),
                         (resource.RLIMIT_NPROC, tasks + processes), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, value if isinstance(value, tuple) else (value, value))


def _main() -> None:
    _limit()
    scratch = os.path.realpath(os.getcwd())
    program = os.path.join(scratch, "main.py")
    with open("main.py", encoding="utf-8") as f:
        source = f.read()
    code = compile(source, program, "exec")  # before the hook: compiling is not a file event anyway
    _install(scratch)
    sys.argv = [program]
    sys.path.insert(0, scratch)
    namespace = {"__name__": "__main__", "__file__": program, "__builtins__": __builtins__}
    try:
        exec(code, namespace)  # noqa: S102 - this *is* the sandboxed program, in the child process
    except BaseException as e:  # noqa: BLE001 - reported as Python would, without this file's frame
        if isinstance(e, SystemExit):
            raise
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        sys.exit(1)


if __name__ == "__main__":
    _main()
