"""A virtualenv holding PyPI's apache-dubbo 3.0.0b1, built once and reused.

apache-dubbo's top-level package is also named ``dubbo``, so it cannot share an
interpreter with ours: interop tests run its provider and consumer scripts
(provider.py, consumer.py next to this file) with this virtualenv's python.

    python tests/apache_dubbo/venv.py      # builds it if needed, prints its python
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))

# apache-dubbo's own `zookeeper` extra asks for kazoo>=2.10.0 and nothing more; keep
# kazoo on the same major version our library's extra allows.
REQUIREMENTS = ("apache-dubbo[zookeeper]==3.0.0b1", "kazoo>=2.10,<3")
# Written last into the virtualenv: a build cut short leaves no marker and is redone.
MARKER = "dubbo-test-venv.txt"
MIN_PYTHON = (3, 11)  # apache-dubbo 3.0.0b1: python_requires=">=3.11"
PIP_TIMEOUT = 900  # seconds for the whole pip install


class VenvError(RuntimeError):
    """The apache-dubbo virtualenv could not be built; the message says why."""


def venv_dir() -> str:
    """``$DUBBO_APACHE_DUBBO_VENV``, else ``<repo>/.venv-apache-dubbo`` (git-ignored)."""
    return os.environ.get("DUBBO_APACHE_DUBBO_VENV") or os.path.join(
        REPO_ROOT, ".venv-apache-dubbo")


def venv_python(path: str | None = None) -> str:
    return os.path.join(path or venv_dir(), "bin", "python")


def _base_python() -> str:
    """An interpreter apache-dubbo accepts: ours if new enough, else python3.1x on PATH."""
    if sys.version_info[:2] >= MIN_PYTHON:
        return sys.executable
    for name in ("python3.13", "python3.12", "python3.11"):
        found = shutil.which(name)
        if found:
            return found
    raise VenvError(f"apache-dubbo 3.0.0b1 needs Python >= 3.11; this is "
                    f"{sys.version.split()[0]} and no python3.11+ is on PATH")


def _is_ready(path: str) -> bool:
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as f:
            return f.read().splitlines()[:len(REQUIREMENTS)] == list(REQUIREMENTS)
    except OSError:
        return False


def _run(argv: list[str], timeout: float) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False,
                              env=env, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired as exc:
        raise VenvError(f"{' '.join(argv)} did not finish in {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = done.stdout.decode("utf-8", "replace")[-3000:]
        raise VenvError(f"{' '.join(argv)} exited {done.returncode}:\n{tail}")


def ensure_venv(path: str | None = None) -> str:
    """Build the virtualenv unless a complete one is there; return its python.

    A lock file next to it lets concurrent test runs share one build. Raises
    VenvError with pip's output when the build fails (no network, old Python).
    """
    path = os.path.abspath(path or venv_dir())
    if _is_ready(path):
        return venv_python(path)
    try:
        return _build(path)
    except OSError as exc:
        raise VenvError(f"cannot build it at {path}: {exc}") from exc


def _build(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_ready(path):  # another run built it while we waited
            return venv_python(path)
        shutil.rmtree(path, ignore_errors=True)
        started = time.monotonic()
        _run([_base_python(), "-m", "venv", path], timeout=120)
        python = venv_python(path)
        _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
              *REQUIREMENTS], timeout=PIP_TIMEOUT)
        # -I: neither PYTHONPATH nor the working directory may put our `dubbo` first
        _run([python, "-I", "-c", "import dubbo.registry.zookeeper.zk_registry, kazoo"],
             timeout=60)
        with open(os.path.join(path, MARKER), "w", encoding="utf-8") as f:
            f.write("\n".join(REQUIREMENTS) + "\n")
            f.write(f"built in {time.monotonic() - started:.1f} s\n")
    return python


if __name__ == "__main__":
    try:
        print(ensure_venv())
    except VenvError as exc:
        sys.exit(f"apache-dubbo virtualenv: {exc}")
