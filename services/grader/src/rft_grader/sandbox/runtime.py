"""What a sandbox worker needs from the host, and the command lines that start one.

`Runtime.discover` finds, once per pool, the interpreter and its standard library, the
allowed packages (`numpy`, `numpy.libs`, ...) and the C libraries the zygote loads with
ctypes. `jailed_command` turns that into a bubblewrap command line that binds exactly
those paths read-only; `unjailed_command` is the explicit weaker mode.

When the server runs as root, bubblewrap itself runs as the unprivileged uid (so the
jail gets its own user namespace: the grader's uid is 65534 inside *and* outside, and
RLIMIT_NPROC counts only that jail's tasks). An unprivileged bubblewrap cannot bind
paths it may not traverse (e.g. an interpreter under /root), so `_launcher.py` first
binds them, as root, into a staging directory inside a private mount namespace, drops
to the uid, and then executes bubblewrap.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import importlib.util
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

from rft_grader.sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

HERE = pathlib.Path(__file__).resolve().parent
INSIDE = HERE / "inside"
ZYGOTE = INSIDE / "zygote.py"
LAUNCHER = HERE / "_launcher.py"
SITE = "/sandbox/site"
LIB = "/sandbox/lib"
JAIL_INSIDE = "/sandbox/inside"
JAIL_ZYGOTE = f"{JAIL_INSIDE}/zygote.py"
# Commonly imported submodules, loaded once per worker rather than once per batch.
PRELOAD_EXTRA = {
    "numpy": ["numpy.linalg", "numpy.random"],
    "scipy": ["scipy.special", "scipy.stats", "scipy.optimize", "scipy.linalg", "scipy.spatial"],
    "sympy": ["sympy.parsing.sympy_parser", "sympy.parsing.latex"],
    "rapidfuzz": ["rapidfuzz.fuzz", "rapidfuzz.distance", "rapidfuzz.process"],
}
PRELOAD_STDLIB = ["json", "re", "math", "statistics", "collections", "itertools", "difflib", "fractions", "decimal"]
_PROBE = (
    "import json, os, sys, sysconfig; v = sysconfig.get_config_var; "
    "print(json.dumps({'exe': os.path.realpath(sys.executable), 'stdlib': sysconfig.get_path('stdlib'), "
    "'platstdlib': sysconfig.get_path('platstdlib'), 'libdir': v('LIBDIR') or '', "
    "'soname': v('INSTSONAME') or '', 'shared': bool(v('Py_ENABLE_SHARED'))}))"
)


@dataclasses.dataclass(frozen=True)
class Bind:
    """One read-only bind: host `source` appears at `dest` inside the jail."""

    source: str
    dest: str


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Host paths a worker needs, resolved once."""

    python: str
    binds: tuple[Bind, ...]
    hidden_dirs: tuple[str, ...]
    packages: tuple[str, ...]
    missing_packages: tuple[str, ...]
    libs: dict[str, str]
    host_site: tuple[str, ...]
    """Directories holding the packages on the host (sys.path of the unjailed mode)."""

    @classmethod
    def discover(cls, settings: SandboxSettings) -> Runtime:
        python = os.path.realpath(settings.sandbox_python or sys.executable)
        info = json.loads(
            subprocess.run(
                [python, "-I", "-S", "-c", _PROBE], check=True, capture_output=True, env={}, timeout=30
            ).stdout
        )
        binds = [Bind(info["exe"], info["exe"])]
        hidden = []
        for key in ("stdlib", "platstdlib"):
            path = info[key]
            if path and all(b.source != path for b in binds):
                binds.append(Bind(path, path))
                if os.path.isdir(os.path.join(path, "site-packages")):
                    hidden.append(os.path.join(path, "site-packages"))  # the base install's own packages
        if info["shared"] and info["soname"]:
            lib = os.path.join(info["libdir"], info["soname"])
            if os.path.exists(lib):
                binds.append(Bind(os.path.realpath(lib), lib))
        packages, missing, host_site = [], [], []
        for name in settings.package_list():
            spec = importlib.util.find_spec(name)
            if spec is None or not (spec.submodule_search_locations or spec.origin):
                missing.append(name)
                continue
            if spec.submodule_search_locations:
                source = list(spec.submodule_search_locations)[0]
                binds.append(Bind(source, f"{SITE}/{name}"))
                vendored = f"{source}.libs"  # auditwheel's bundled shared libraries, found via $ORIGIN/..
                if os.path.isdir(vendored):
                    binds.append(Bind(vendored, f"{SITE}/{name}.libs"))
            else:
                binds.append(Bind(spec.origin, f"{SITE}/{os.path.basename(spec.origin)}"))
            packages.append(name)
            parent = os.path.dirname(binds[-1].source if not spec.submodule_search_locations else source)
            if parent not in host_site:
                host_site.append(parent)
        seccomp = importlib.util.find_spec("pyseccomp")
        if seccomp is None or not seccomp.origin:
            raise RuntimeError("pyseccomp is not installed: the sandbox needs it for its seccomp filter")
        binds.append(Bind(seccomp.origin, f"{LIB}/pyseccomp.py"))
        if os.path.dirname(seccomp.origin) not in host_site:
            host_site.append(os.path.dirname(seccomp.origin))
        binds.append(Bind(str(INSIDE), JAIL_INSIDE))
        libs = {}
        for name in ("c", "seccomp"):
            found = ctypes.util.find_library(name)
            path = _library_path(found) if found else None
            if path is None:
                raise RuntimeError(f"shared library lib{name} not found (Debian: libseccomp2)")
            libs[name] = path
        return cls(python, tuple(binds), tuple(hidden), tuple(packages), tuple(missing), libs, tuple(host_site))

    def preload(self) -> list[str]:
        modules = list(PRELOAD_STDLIB)
        for name in self.packages:
            modules.append(name)
            modules.extend(PRELOAD_EXTRA.get(name, []))
        return modules


def _library_path(soname: str) -> str | None:
    """Absolute path of a library soname such as 'libseccomp.so.2' (ldconfig's cache, then common dirs)."""
    if os.path.isabs(soname):
        return soname
    for directory in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib"):
        candidate = os.path.join(directory, soname)
        if os.path.exists(candidate):
            return candidate
    return None


def find_bwrap(settings: SandboxSettings) -> str | None:
    path = shutil.which(settings.sandbox_bwrap_path)
    return os.path.realpath(path) if path else None


def zygote_config(settings: SandboxSettings, runtime: Runtime, mode: str, workdir: str, fds: tuple[int, int]) -> dict:
    """The zygote's start-up configuration; `fds` are its (request, response) pipe ends."""
    jailed = mode == "bwrap"
    return {
        "mode": mode,
        "site": [SITE, LIB] if jailed else list(runtime.host_site),
        "preload": runtime.preload(),
        "libs": runtime.libs,
        "uid": settings.sandbox_uid,
        "gid": settings.sandbox_gid,
        "workdir": workdir,
        "request_fd": fds[0],
        "response_fd": fds[1],
        "limits": {
            "timeout_seconds": settings.sandbox_timeout_seconds,
            "cpu_seconds": settings.sandbox_cpu_seconds,
            "memory_bytes": settings.sandbox_memory_bytes,
            "file_bytes": settings.sandbox_tmp_bytes,
            "open_files": settings.sandbox_open_files,
            "processes": settings.sandbox_processes,
            # Tasks of the jail's user namespace besides the grader: the zygote, the fork server
            # and one child of a failed run not yet reaped. Unjailed, the uid is shared
            # host-wide, so every tenant's workers count.
            "nproc_base": 3 if jailed else 3 * settings.sandbox_max_tenants * settings.sandbox_workers_per_tenant,
            "max_output_bytes": settings.sandbox_max_output_bytes,
            "max_message_bytes": settings.sandbox_max_output_bytes + 4096,
        },
    }


def jailed_command(settings: SandboxSettings, runtime: Runtime, bwrap: str, stage: str | None) -> list[str]:
    """bubblewrap command line; with `stage`, sources are read from the launcher's staging dir."""
    args = [
        bwrap,
        "--unshare-all",  # user, pid, net (only lo), ipc, uts, cgroup
        "--unshare-user",
        "--disable-userns",  # no nested user namespaces for the graded code
        "--uid",
        str(settings.sandbox_uid),
        "--gid",
        str(settings.sandbox_gid),
        "--as-pid-1",  # the zygote is the pid namespace's init: bubblewrap reaps it itself, no orphaned reaper
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into the server's terminal
        "--clearenv",
        "--hostname",
        "sandbox",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "HOME",
        "/tmp",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for i, bind in enumerate(runtime.binds):
        source = f"{stage}/{i}" if stage else bind.source
        args += ["--ro-bind", source, bind.dest]
    for hidden in runtime.hidden_dirs:
        args += ["--tmpfs", hidden, "--remount-ro", hidden]
    args += ["--dev", "/dev", "--remount-ro", "/dev"]
    args += ["--size", str(settings.sandbox_tmp_bytes), "--perms", "0700", "--tmpfs", "/tmp"]
    args += ["--remount-ro", "/", "--chdir", "/tmp"]
    return args


def launcher_command(settings: SandboxSettings, runtime: Runtime, argv: list[str], stage: str) -> list[str]:
    spec = {
        "stage": stage,
        "sources": [b.source for b in runtime.binds],
        "uid": settings.sandbox_uid,
        "gid": settings.sandbox_gid,
        "argv": argv,
    }
    return [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(spec)]


def worker_command(
    settings: SandboxSettings,
    runtime: Runtime,
    mode: str,
    bwrap: str | None,
    stage: str | None,
    workdir: str,
    fds: tuple[int, int],
) -> list[str]:
    """Full command line of one worker (jailed or not); `fds` are inherited by number."""
    config = zygote_config(settings, runtime, mode, "/tmp" if mode == "bwrap" else workdir, fds)
    if mode != "bwrap":
        return [runtime.python, "-I", "-S", "-B", str(ZYGOTE), json.dumps(config)]
    inner = [runtime.python, "-I", "-S", "-B", JAIL_ZYGOTE, json.dumps(config)]
    use_launcher = os.geteuid() == 0
    argv = jailed_command(settings, runtime, bwrap or "bwrap", stage if use_launcher else None) + ["--", *inner]
    return launcher_command(settings, runtime, argv, stage) if use_launcher else argv
