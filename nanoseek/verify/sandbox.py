"""Run untrusted Python (a candidate solution plus its tests, HumanEval style) in a sandboxed process.

    from nanoseek.verify import run_code
    result = run_code(solution + "\\n" + tests, timeout=5.0, memory_mb=512)
    result.passed, result.status, result.stdout, result.stderr   # status: passed|failed|timeout|error

A program passes when it runs to its end without an uncaught exception; ending early through
`sys.exit` / `os._exit`, whatever the status, is a failure (it skipped its tests).

What one run gets (the child's side is `sandbox_child.py`):
- its own process session, killed as a whole (SIGKILL to the process group) at the wall-clock timeout;
- a throwaway temporary working directory, deleted afterwards; an empty environment (no host variables);
- rlimits: CPU seconds, address space (`memory_mb`), file size, no new processes or threads, no core;
- where the kernel allows (root, or unprivileged user namespaces): a new network namespace (no
  network at all, not even loopback) and a new mount namespace with private tmpfs over /tmp, /var/tmp,
  /dev/shm and /run/lock;
- as root: an unprivileged uid of its own (RLIMIT_NPROC does not bind root), no_new_privs;
- in-process guards: sockets, process creation, ctypes, writes outside its directory raise;
- stdout and stderr captured to files, of which at most `max_output_bytes` each come back.

Threat model, honestly: this is a best-effort sandbox for model-written code in RL and evals — buggy,
greedy or reward-hacking programs — not a VM or seccomp jail against a skilled attacker. The program
can read whatever its uid may read (world-readable files), spend its CPU and memory budget, and use
kernel attack surface. Without root and without user namespaces only the rlimits, the scrubbed
environment and the in-process guards remain, and then the program runs as the host's user. The
"ran to the end" marker can be forged by a program that inspects the harness's memory.
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
SETUP_FAILED = 70  # sandbox_child.SETUP_FAILED
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/nonexistent",
    "OMP_NUM_THREADS": "1",  # native libraries must not start threads: RLIMIT_NPROC forbids them
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass
class SandboxResult:
    status: str  # "passed" | "failed" (ran, but raised or exited early) | "timeout" | "error" (no run)
    stdout: str
    stderr: str
    returncode: int | None
    duration: float  # wall-clock seconds

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _read_capped(f, limit: int) -> str:
    f.seek(0)
    data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + "\n[output truncated]" if len(data) > limit else text


def _ran_to_end(f, nonce: str) -> bool:
    """Whether stdout ends with the child's nonce line; strips it from the file if so."""
    marker = f"\n{nonce}\n".encode()
    size = f.seek(0, os.SEEK_END)
    if size < len(marker):
        return False
    f.seek(size - len(marker))
    if f.read() != marker:
        return False
    f.truncate(size - len(marker))
    return True


def _remove_tree(path: str) -> None:
    """Delete the working directory, even where the program took away its own permissions."""
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, stat.S_IRWXU)
    shutil.rmtree(path, ignore_errors=True)


def run_code(
    code: str,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    max_output_bytes: int = 64 * 1024,
    file_size_mb: int = 16,
) -> SandboxResult:
    """Run `code` (a whole Python program) in the sandbox; see the module docstring."""
    workdir = tempfile.mkdtemp(prefix="nanoseek-sandbox-")
    start = time.monotonic()
    try:
        os.chmod(workdir, 0o700)
        nonce = secrets.token_hex(16)
        config = {
            "cpu_seconds": int(timeout) + 1,
            "memory_bytes": memory_mb * 1024 * 1024,
            "file_bytes": file_size_mb * 1024 * 1024,
            "nonce": nonce,
        }
        with open(os.path.join(workdir, "sandbox.json"), "w") as f:
            json.dump(config, f)
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(code)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-B", CHILD_SCRIPT],
                    cwd=workdir,
                    env=SANDBOX_ENV,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group, killed as a whole
                )
            except OSError as e:
                return SandboxResult("error", "", f"could not start the sandbox: {e}", None, 0.0)
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            duration = time.monotonic() - start
            rc = proc.returncode
            passed = rc == 0 and not timed_out and _ran_to_end(out, nonce)
            stdout, stderr = _read_capped(out, max_output_bytes), _read_capped(err, max_output_bytes)
        if passed:
            status = "passed"
        elif timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL):
            status = "timeout"  # wall clock, or the CPU rlimit (SIGXCPU, then SIGKILL at the hard limit)
        elif rc == SETUP_FAILED and "nanoseek sandbox: setup failed" in stderr:
            status = "error"
        else:
            status = "failed"
        return SandboxResult(status, stdout, stderr, rc, duration)
    finally:
        _remove_tree(workdir)


def run_code_batch(codes: Sequence[str], workers: int | None = None, **kwargs) -> list[SandboxResult]:
    """`run_code` over many programs, `workers` at a time (default: the CPU count); kwargs go to run_code."""
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda code: run_code(code, **kwargs), codes))
