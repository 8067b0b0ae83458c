"""The grader's node profiles (deploy/k8s/node-profiles) for the bubblewrap jail.

seccomp: the JSON profile is compiled with libseccomp (pyseccomp, as runc does with
the same library) and loaded into a child process, which then runs bubblewrap as an
unprivileged user with the grader's jail flags: bubblewrap must work under it, and
syscalls the profile denies must fail with EPERM. A control run that also denies
`unshare` must break bubblewrap, which shows the filter really is in force.

AppArmor: apparmor_parser (Debian's apparmor package) compiles the profile without
loading it into the kernel; a broken copy must be rejected.
"""

from __future__ import annotations

import ctypes
import json
import os
import pathlib
import subprocess

import pyseccomp
import pytest
from rft_deploy_testlib import DEPLOY, one, pod_spec, tool

PROFILES = DEPLOY / "k8s" / "node-profiles"
SECCOMP = PROFILES / "rft-grader-bubblewrap.seccomp.json"
APPARMOR = PROFILES / "rft-grader-bubblewrap.apparmor"
NOBODY = 65534
# A syscall number per name, for the probe that calls them directly.
PROBE = """
import ctypes, errno, json, sys
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, number in json.loads(sys.argv[1]).items():
    ctypes.set_errno(0)
    libc.syscall(number, 0, 0, 0, 0, 0)
    out[name] = errno.errorcode.get(ctypes.get_errno(), "OK")
print(json.dumps(out))
"""


def build_filter(profile: dict, extra_denied: tuple[str, ...] = ()) -> pyseccomp.SyscallFilter:
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    seccomp_filter = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    resolved = 0
    for rule in profile["syscalls"]:
        assert rule["action"] == "SCMP_ACT_ERRNO"
        for name in [*rule["names"], *extra_denied]:
            try:
                seccomp_filter.add_rule(pyseccomp.ERRNO(rule["errnoRet"]), name)
                resolved += 1
            except (ValueError, RuntimeError, OSError):
                pass  # a syscall this libseccomp or architecture does not know (runc skips those too)
    assert resolved > 40
    return seccomp_filter


def run_confined(argv: list[str], extra_denied: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    profile = json.loads(SECCOMP.read_text())

    def confine() -> None:
        if os.geteuid() == 0:  # like the pod: not root
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        build_filter(profile, extra_denied).load()

    return subprocess.run(argv, preexec_fn=confine, capture_output=True, text=True, timeout=60, cwd="/")


def bwrap_argv(command: list[str]) -> list[str]:
    """The jail flags of the grader's bubblewrap mode (rft_grader.sandbox.runtime)."""
    argv = [tool("bwrap"), "--unshare-all", "--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534"]
    argv += ["--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    argv += ["--dev", "/dev", "--remount-ro", "/dev", "--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp"]
    return [*argv, "--", *command]


def test_bubblewrap_runs_under_the_seccomp_profile():
    result = run_confined(bwrap_argv(["/usr/bin/python3", "-I", "-S", "-c", "import os; print(6 * 7, os.getuid())"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "65534"]


def test_the_profile_is_in_force_denying_unshare_breaks_bubblewrap():
    result = run_confined(bwrap_argv(["/usr/bin/python3", "-c", "print(1)"]), extra_denied=("unshare", "clone3"))
    assert result.returncode != 0
    assert "Operation not permitted" in result.stderr or "permission" in result.stderr.lower()


def test_the_profile_denies_kernel_attack_surface():
    names = ["keyctl", "bpf", "perf_event_open", "userfaultfd", "kexec_load", "open_by_handle_at", "ptrace"]
    numbers = {name: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) for name in names}
    probe = ["/usr/bin/python3", "-I", "-S", "-c", PROBE, json.dumps(numbers)]
    confined = json.loads(run_confined(probe).stdout)
    assert confined == dict.fromkeys(names, "EPERM")
    free = json.loads(subprocess.run(probe, capture_output=True, text=True, timeout=60, check=True).stdout)
    assert any(errno != "EPERM" for errno in free.values()), "the probe would pass without the profile"
    assert ctypes.CDLL(None) is not None


def test_apparmor_profile_compiles_and_broken_copy_is_rejected(tmp_path: pathlib.Path):
    parser = tool("apparmor_parser")
    ok = subprocess.run([parser, "-QKT", str(APPARMOR)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    text = APPARMOR.read_text()
    assert "profile rft-grader-bubblewrap " in text
    for rule in ("  mount,", "  pivot_root,", "deny @{PROC}/sysrq-trigger rwklx", "deny /sys/kernel/security/** rwklx"):
        assert rule in text, rule
    broken = tmp_path / "broken"
    broken.write_text(text.replace("  pivot_root,", "  pivot-root,"))  # a typo of the rule
    bad = subprocess.run([parser, "-QKT", str(broken)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0


def test_cpu_dev_pods_name_the_shipped_profiles(rendered):
    spec = pod_spec(one(rendered["cpu-dev"], "Deployment", "rft-grader"))
    apparmor = spec["containers"][0]["securityContext"]["appArmorProfile"]["localhostProfile"]
    assert f"profile {apparmor} " in APPARMOR.read_text()
    seccomp = spec["securityContext"]["seccompProfile"]["localhostProfile"]
    docs = (DEPLOY.parent / "docs" / "deploy.md").read_text()
    # The docs' install command copies the shipped file to the path the pod names.
    assert f"{SECCOMP.name} /var/lib/kubelet/seccomp/{seccomp}" in docs


@pytest.mark.parametrize("name", ["unshare", "mount", "umount2", "pivot_root", "clone"])
def test_the_profile_leaves_bubblewrap_its_syscalls(name):
    denied = {n for rule in json.loads(SECCOMP.read_text())["syscalls"] for n in rule["names"]}
    assert name not in denied
