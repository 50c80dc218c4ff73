"""The code sandbox: correct code passes, wrong code fails, and each adversarial program scores 0 and
leaves the host untouched. Each attack is written so that, if it worked, the program would run to its
end (a pass); the sandbox must make it fail."""

import os
import re
import secrets
import shutil
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from nanoseek.verify import run_code, run_code_batch

SOLUTION = textwrap.dedent(
    '''
    def add_digits(n: int) -> int:
        """Sum of the decimal digits of n >= 0."""
        return sum(int(d) for d in str(n))
    '''
)
WRONG_SOLUTION = SOLUTION.replace("sum(int(d) for d in str(n))", "len(str(n))")
TESTS = textwrap.dedent(
    """
    def check(candidate):
        assert candidate(0) == 0
        assert candidate(123) == 6
        assert candidate(9999) == 36

    check(add_digits)
    """
)


def test_correct_solution_passes():
    result = run_code(SOLUTION + TESTS, timeout=5)
    assert result.passed and result.status == "passed", result.stderr
    assert result.returncode == 0


def test_wrong_solution_fails():
    result = run_code(WRONG_SOLUTION + TESTS, timeout=5)
    assert not result.passed and result.status == "failed"
    assert "AssertionError" in result.stderr


def test_syntax_error_fails():
    result = run_code("def f(:\n    pass\n", timeout=5)
    assert result.status == "failed" and "SyntaxError" in result.stderr


@pytest.mark.parametrize(
    "exit_call", ["import sys; sys.exit(0)", "import os; os._exit(0)", "quit()", "raise SystemExit"]
)
def test_exiting_before_the_tests_is_not_a_pass(exit_call):
    result = run_code(WRONG_SOLUTION + exit_call + "\n" + TESTS, timeout=5)
    assert result.status == "failed"


def test_stdout_comes_back_without_the_marker():
    result = run_code("print('hello')\nprint('world', end='')", timeout=5)
    assert result.passed and result.stdout == "hello\nworld"


def test_scratch_files_work_and_the_directory_is_deleted():
    program = "open('scratch.txt', 'w').write('hi')\nassert open('scratch.txt').read() == 'hi'\nimport os\nprint(os.getcwd())"
    result = run_code(program, timeout=5)
    assert result.passed, result.stderr
    workdir = result.stdout.strip()
    assert "nanoseek-sandbox-" in workdir and not os.path.exists(workdir)


def test_output_is_capped():
    result = run_code("print('x' * 1_000_000)", timeout=5, max_output_bytes=1000)
    assert result.passed and len(result.stdout) < 1100 and result.stdout.endswith("[output truncated]")


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_code("while True:\n    pass\n", timeout=1)
    assert result.status == "timeout" and not result.passed
    assert time.monotonic() - start < 10


def test_sleeping_times_out_on_the_wall_clock():
    result = run_code("import time\ntime.sleep(60)\n", timeout=1)
    assert result.status == "timeout" and result.duration < 10


FORK_BOMB = textwrap.dedent(
    """
    import os, sys, time
    forked = 0
    def attempt(fork):
        global forked
        for _ in range(20):
            try:
                pid = fork()
            except Exception:
                return
            if pid == 0:  # a child: report, then linger so that a leak would show
                os.write(1, f"child {os.getpid()}\\n".encode())
                time.sleep(30)
                os._exit(0)
            forked += 1
    attempt(os.fork)                 # the plain way
    sys.modules.pop("posix", None)   # around the in-process guard: a fresh posix module
    import posix
    attempt(posix.fork)
    if not forked:
        raise RuntimeError("no fork succeeded")
    """
)


def test_fork_bomb_fails():
    result = run_code(FORK_BOMB, timeout=5)
    assert not result.passed and result.status == "failed", (result.status, result.stdout, result.stderr)
    assert "no fork succeeded" in result.stderr
    leaked = [int(pid) for pid in re.findall(r"child (\d+)", result.stdout)]
    assert not [pid for pid in leaked if os.path.exists(f"/proc/{pid}")]


def test_classic_fork_bomb_fails_fast():
    result = run_code("import os\nwhile True:\n    os.fork()\n", timeout=5)
    assert result.status == "failed" and result.duration < 5


def test_memory_bomb_fails():
    program = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))\n"
    result = run_code(program, timeout=10, memory_mb=256)
    assert result.status == "failed" and "MemoryError" in result.stderr
    result = run_code("x = bytearray(8 * 1024 ** 3)\n", timeout=10, memory_mb=256)
    assert result.status == "failed" and "MemoryError" in result.stderr


def write_outside_program(victim: Path, new: Path) -> str:
    return textwrap.dedent(
        f"""
        import io, os, pathlib
        victim, new = {str(victim)!r}, {str(new)!r}
        attacks = [
            lambda: open(victim, "w").write("pwned"),
            lambda: open(victim, "a").write("pwned"),
            lambda: os.remove(victim),
            lambda: os.rename(victim, new),
            lambda: pathlib.Path(new).write_text("pwned"),
            lambda: os.close(os.open(new, os.O_CREAT | os.O_WRONLY)),
            lambda: io.FileIO(victim, "w").write(b"pwned"),  # around the in-process guard
            lambda: io.FileIO(new, "w").write(b"pwned"),
            lambda: os.symlink(victim, "link") or open("link", "w").write("pwned"),
        ]
        worked = 0
        for i, attack in enumerate(attacks):
            try:
                attack()
                worked += 1
            except OSError as e:
                print("refused", i, type(e).__name__, e)
        if not worked:
            raise RuntimeError("every write was refused")
        """
    )


def test_writing_outside_its_directory_fails():
    outside = Path(tempfile.mkdtemp(prefix="nanoseek-test-outside-"))
    try:
        outside.chmod(0o777)  # wide open, so that only the sandbox stands in the way
        victim = outside / "victim.txt"
        victim.write_text("original")
        victim.chmod(0o666)
        result = run_code(write_outside_program(victim, outside / "new.txt"), timeout=5)
        assert not result.passed and "every write was refused" in result.stderr, result.stdout
        assert result.stdout.count("refused") == 9
        assert victim.read_text() == "original"
        assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    finally:
        shutil.rmtree(outside)


def network_program(port: int) -> str:
    return textwrap.dedent(
        f"""
        import gc, socket
        def plain():
            socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"pwned")
        def raw():  # around the in-process guard: the C socket type, found through the garbage collector
            cls = [o for o in gc.get_objects() if isinstance(o, type) and o.__name__ == "socket"][0]
            s = cls.__mro__[-2](socket.AF_INET, socket.SOCK_STREAM)
            print("raw socket", s)
            s.settimeout(2)
            s.connect(("127.0.0.1", {port}))
        worked = 0
        for attack in (plain, raw):
            try:
                attack()
                worked += 1
            except OSError as e:
                print("refused", attack.__name__, type(e).__name__, e)
        if not worked:
            raise RuntimeError("no connection")
        """
    )


def test_network_is_unreachable():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    try:
        result = run_code(network_program(listener.getsockname()[1]), timeout=5)
        assert not result.passed and "no connection" in result.stderr, result.stdout
        assert "refused plain" in result.stdout and "refused raw" in result.stdout
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_host_environment_is_invisible(monkeypatch):
    secret = "nanoseek-secret-" + secrets.token_hex(8)
    monkeypatch.setenv("NANOSEEK_TEST_SECRET", secret)
    program = textwrap.dedent(
        """
        import io, os
        found = [v for v in os.environ.values() if "nanoseek-secret-" in v]
        paths = ["/proc/self/environ", f"/proc/{os.getppid()}/environ", "/proc/1/environ"]
        paths += [f"/proc/{p}/environ" for p in os.listdir("/proc") if p.isdigit()]
        for path in paths:
            for read in (lambda p: open(p, "rb").read(), lambda p: io.FileIO(p).read()):
                try:
                    data = read(path)
                except Exception:
                    continue
                found += [part.decode() for part in data.split(b"\\0") if b"nanoseek-secret-" in part]
        if not found:
            raise RuntimeError("no secret found")
        print(found)
        """
    )
    if os.geteuid() != 0:
        pytest.skip("without root the sandbox runs as the host's user, who may read its own /proc entries")
    result = run_code(program, timeout=10)
    assert not result.passed and "no secret found" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_run_code_batch():
    results = run_code_batch([SOLUTION + TESTS, WRONG_SOLUTION + TESTS, "pass"], workers=2, timeout=5)
    assert [r.status for r in results] == ["passed", "failed", "passed"]
