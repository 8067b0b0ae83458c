"""Root-side launcher of a jailed worker: stage the binds, drop to the uid, exec bubblewrap.

Run as `python -I -S _launcher.py SPEC_JSON` by a server running as root. It enters a
private mount namespace (nothing it mounts is visible on the host), mounts a small tmpfs
over the staging directory and bind-mounts every source there as `<stage>/<index>`, so
paths the unprivileged uid may not traverse (an interpreter under /root) become
reachable. Then it drops every privilege (supplementary groups, gid, uid: capabilities
go with uid 0) and executes bubblewrap, which, unprivileged, builds the jail in its own
user namespace. Inherited descriptors (the worker's pipes) pass through untouched.
"""

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18


def main() -> None:
    spec = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    stage = spec["stage"].encode()
    check(libc.mount(b"tmpfs", stage, b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755,size=1m"), "mount staging tmpfs")
    for index, source in enumerate(spec["sources"]):
        target = os.path.join(spec["stage"], str(index))
        if os.path.isdir(source):
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        check(libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None), f"bind {source}")
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        check(libc.mount(None, target.encode(), None, flags, None), f"read-only {source}")
    uid, gid = spec["uid"], spec["gid"]
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise SystemExit("launcher: failed to drop root")
    argv = spec["argv"]
    os.execve(argv[0], argv, {})


if __name__ == "__main__":
    main()
