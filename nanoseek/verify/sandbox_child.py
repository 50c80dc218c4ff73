"""The child side of the code sandbox: lock this process down, then run the untrusted program.

`nanoseek.verify.sandbox.run_code` starts it as `python -I -B sandbox_child.py` in a fresh temporary
directory holding `program.py` (the untrusted code) and `sandbox.json` (limits and a nonce), with an
empty environment. Not meant to be run by hand. In order, it:

1. reads and deletes sandbox.json;
2. as root: imports the standard modules solutions usually need, while it can still read them (the
   interpreter's files may live where the sandbox uid can't read, or under /tmp, which goes private);
3. enters a new network namespace (a downed loopback and nothing else: no network at all) and a new
   mount namespace with private, empty tmpfs over the world-writable directories (/tmp, /var/tmp,
   /dev/shm, /run/lock), when the kernel lets it (as root, or through an unprivileged user namespace);
4. sets resource limits: CPU seconds, address space, file size, no new processes or threads
   (RLIMIT_NPROC=1), no core files; as root, gives the working directory to a uid of its own
   (1_000_000_000 + pid, else `nobody`) and drops to it, so that RLIMIT_NPROC binds (it does not bind
   root), host files are protected by ordinary permissions, and host processes can't be signalled or
   read (/proc/PID/environ);
5. sets no_new_privs, so that exec'ing a setuid binary grants nothing;
6. installs in-process guards (defense in depth, bypassable by determined code): sockets, process
   creation and ctypes raise PermissionError, and so do writes outside the working directory and
   reads of other processes' /proc entries;
7. runs program.py as `__main__`; only if it runs to its end does it print the nonce line that tells
   the host the program passed (so `sys.exit(0)` or `os._exit(0)` before the tests is a failure).
"""

import _posixsubprocess
import _socket
import builtins
import contextlib
import io
import json
import os
import posix
import re
import resource
import socket
import subprocess
import sys
import traceback
from typing import NoReturn

SETUP_FAILED = 70  # exit status when the sandbox itself could not be set up
UID_BASE = 1_000_000_000
NOBODY = 65534

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
PR_SET_NO_NEW_PRIVS = 38
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

# Imported before dropping root: what HumanEval-style solutions and their tests use.
PREIMPORT = (  # noqa: SIM905
    "abc array base64 binascii bisect calendar cmath collections collections.abc copy dataclasses datetime "
    "decimal enum fractions functools hashlib heapq io itertools json linecache math numbers operator "
    "random re statistics string struct textwrap time traceback typing unicodedata _strptime"
).split()


def fail(message: str) -> NoReturn:
    print(f"nanoseek sandbox: setup failed: {message}", file=sys.stderr, flush=True)
    os._exit(SETUP_FAILED)


def libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def isolate_namespaces() -> None:
    """New network and mount namespaces when the kernel allows; carry on without them when not."""
    try:
        c = libc()
    except (ImportError, OSError):
        return
    as_user = 0 if os.getuid() == 0 else CLONE_NEWUSER  # unprivileged: through a user namespace
    if c.unshare(CLONE_NEWNET | CLONE_NEWNS | as_user) != 0:
        c.unshare(CLONE_NEWNET | as_user)
        return
    # make every mount private first, so that nothing mounted here propagates back to the host
    if c.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return
    for path in PRIVATE_TMP_DIRS:
        if os.path.isdir(path):
            c.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64m,mode=1777")


def set_limits(config: dict) -> None:
    cpu = config["cpu_seconds"]
    limits = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),  # SIGXCPU at the soft limit, SIGKILL at the hard one
        (resource.RLIMIT_AS, (config["memory_bytes"],) * 2),
        (resource.RLIMIT_FSIZE, (config["file_bytes"],) * 2),
        (resource.RLIMIT_NPROC, (1, 1)),  # this process only: no fork, no threads (not binding for root)
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    for which, value in limits:
        try:
            resource.setrlimit(which, value)
        except (ValueError, OSError) as e:
            if which != resource.RLIMIT_NPROC:  # NPROC is only advisory on some systems
                fail(f"setrlimit({which}): {e}")


def preimport() -> None:
    """Import what solutions usually need while we can still read it (before the uid drop, and before
    the private /tmp hides a Python that lives there)."""
    for name in PREIMPORT:
        with contextlib.suppress(ImportError):
            __import__(name)


def drop_root() -> None:
    """Become an unprivileged uid of our own; abort rather than run untrusted code as root."""
    for uid in (UID_BASE + os.getpid(), NOBODY):
        try:
            os.chown(".", uid, uid)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            break
        except OSError:
            continue
    if os.getuid() == 0 or os.geteuid() == 0 or os.getgid() == 0:
        fail("could not drop root privileges")


def set_no_new_privs() -> None:
    with contextlib.suppress(ImportError, OSError):
        libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def install_guards(workdir: str) -> None:
    """Make the common ways out raise PermissionError. Defense in depth only: Python code that
    really wants to can get around in-process patches; the namespaces, the uid and the limits are
    what hold."""

    def blocked(what: str):
        def deny(*args, **kwargs):
            raise PermissionError(f"sandbox: {what} is not allowed")

        return deny

    for module in (socket, _socket):
        for name in ("socket", "SocketType", "socketpair", "fromfd", "create_connection", "create_server"):
            if hasattr(module, name):
                setattr(module, name, blocked("network access"))
    process_calls = ["fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "kill", "killpg"]
    process_calls += [n for n in dir(os) if n.startswith(("exec", "spawn"))]
    for module in (os, posix):
        for name in process_calls:
            if hasattr(module, name):
                setattr(module, name, blocked("starting or signalling processes"))
    subprocess.Popen = blocked("starting processes")
    _posixsubprocess.fork_exec = blocked("starting processes")
    for name in ("ctypes", "_ctypes"):  # raw system calls
        sys.modules[name] = None

    root = os.path.realpath(workdir)

    def check(path, write: bool) -> None:
        if isinstance(path, int):  # an open file descriptor: already allowed when it was opened
            return
        real = os.path.realpath(os.fsdecode(os.fspath(path)))
        if write and real != root and not real.startswith(root + os.sep):
            raise PermissionError(f"sandbox: writing outside the working directory: {real}")
        other = re.match(r"/proc/(\d+)(/|$)", real)
        if other and int(other.group(1)) != os.getpid():
            raise PermissionError(f"sandbox: reading another process: {real}")

    real_open, real_os_open = builtins.open, os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_open(file, mode="r", *args, **kwargs):
        check(file, write=any(c in mode for c in "wax+"))
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is not None:
            raise PermissionError("sandbox: dir_fd is not allowed")
        check(path, write=bool(flags & write_flags))
        return real_os_open(path, flags, mode)

    builtins.open = io.open = guarded_open
    os.open = posix.open = guarded_os_open

    def guard_paths(func):
        def guarded(*args, **kwargs):
            if any(kwargs.get(k) is not None for k in ("dir_fd", "src_dir_fd", "dst_dir_fd")):
                raise PermissionError("sandbox: dir_fd is not allowed")
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)):
                    check(arg, write=True)
            return func(*args, **kwargs)

        return guarded

    mutating = "chmod chown lchown link mkdir mkfifo mknod remove removexattr rename replace rmdir"
    mutating += " setxattr symlink truncate unlink utime chroot"
    for name in mutating.split():
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, guard_paths(getattr(module, name)))


def read_job() -> tuple[dict, str]:
    try:
        with open("sandbox.json") as f:
            config = json.load(f)
        os.remove("sandbox.json")  # the nonce must not stay where the program can read it
        with open("program.py", encoding="utf-8") as f:
            return config, f.read()
    except (OSError, ValueError) as e:
        fail(f"reading the job: {e}")


def main() -> None:
    config, source = read_job()
    if os.getuid() == 0:
        preimport()
    isolate_namespaces()
    set_limits(config)
    if os.getuid() == 0:
        drop_root()
    set_no_new_privs()
    try:
        code = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError):
        traceback.print_exc()
        os._exit(1)
    try:
        install_guards(os.getcwd())
    except Exception as e:
        fail(f"installing guards: {e!r}")
    namespace = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
    nonce = config.pop("nonce")
    try:
        exec(code, namespace)
    except SystemExit as e:  # ending early, whatever the status, is not passing
        flush()
        os._exit(e.code if isinstance(e.code, int) and 0 < e.code < 256 else 1)
    except BaseException:
        traceback.print_exc()
        flush()
        os._exit(1)
    flush()
    os.write(1, f"\n{nonce}\n".encode())
    os._exit(0)  # skip atexit handlers the program may have registered


def flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):  # a program may have replaced or closed them
            stream.flush()


if __name__ == "__main__":
    main()
