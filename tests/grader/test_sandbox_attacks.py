"""The attack suite of the python sandbox, run through a real rft-grader over gRPC.

Every hostile grader or hostile model output in sandbox_helpers.ATTACKS is graded by a
real service process (bubblewrap jails, small limits so the suite stays quick). After
each one: the attack was contained (the expected error kind, or the score its grader
returns when the attack failed), the service still serves, no stray process remains
(every process of uid 65534 belongs to a warm worker jail, and each jail holds only its
zygote, its fork server and a spare child), and the next honest grade is right.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import re
import secrets
import time

import grpc
import psutil
import pytest
from graderlib import KIND, Stub, grade, scores, types
from rft.grader.v1 import grader_pb2
from rft_common.tenancy import tenant_label
from sandbox_helpers import (
    ATTACKS,
    HONEST,
    IPC_CREATE,
    IPC_PROBE,
    PREVIOUS_BATCH_PROBE,
    SECRET_ENV,
    Attack,
    nested,
    sandbox_processes,
)
from service_process import ServiceProcess

pytestmark = pytest.mark.python_grader

TENANT = "attacker"
BYSTANDER = "bystander"
SECRET = "s3cret-" + secrets.token_hex(8)
LIMIT_FLAGS = [
    "--sandbox-timeout-seconds", "2",
    "--sandbox-cpu-seconds", "2",
    "--sandbox-memory-bytes", str(256 * 1024**2),
    "--sandbox-tmp-bytes", str(64 * 1024**2),
    "--sandbox-workers-per-tenant", "2",
    "--max-text-chars", "20000000",
    "--sandbox-idle-seconds", "86400",  # no idle jail is reaped mid-module (attacks check jails stay put)
]  # fmt: skip


def python_spec(source: str) -> dict:
    return {"type": "python", "name": "attack", "source": source}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    """A real grader whose environment holds a secret graded code must never see."""
    data_dir = tmp_path_factory.mktemp("grader-sandbox")
    with ServiceProcess("rft-grader", ["--data-dir", str(data_dir), *LIMIT_FLAGS], env={SECRET_ENV: SECRET}) as proc:
        yield proc


@pytest.fixture(scope="module")
def stub(service: ServiceProcess):
    with service.channel() as channel:
        yield Stub(channel)


def honest_batch(stub: Stub, tenant: str = TENANT, n: int = 64) -> None:
    """A batch big enough to use every worker of the tenant; every score must be exact."""
    items = [("x" * (i % 100), {}) for i in range(n)]
    response = grade(stub, python_spec(HONEST), items, tenant=tenant)
    assert scores(response) == [(i % 100) / 100 for i in range(n)]


def is_jail(proc: psutil.Process) -> bool:
    try:
        return proc.cmdline()[:1] == ["/usr/bin/bwrap"] or proc.name() == "bwrap"
    except psutil.Error:
        return False


def jails_of(server_pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(server_pid).children() if is_jail(c)]


def accounted_for(pid: int, server_pid: int) -> bool:
    """In a jail, or run by another grader on this host (parallel test runs): not our stray."""
    try:
        parents = psutil.Process(pid).parents()
        if any(is_jail(parent) for parent in parents):
            return True
        return any(p.pid != server_pid and "rft-grader" in " ".join(p.cmdline()[:2]) for p in parents)
    except psutil.Error:
        return True  # gone already


def _status(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.Error:
        return psutil.STATUS_DEAD


def describe(pid: int) -> str:
    try:
        proc = psutil.Process(pid)
        return f"{pid} {proc.status()} parent {proc.ppid()}: {' '.join(proc.parent().cmdline())[:100]}"
    except psutil.Error as exc:
        return f"{pid}: {exc}"


def idle_spare(proc: psutil.Process) -> bool:
    """A zygote's spare child: forked ahead of the next batch, not confined yet (no CPU limit)."""
    try:
        with open(f"/proc/{proc.pid}/limits") as limits:  # prlimit() is refused across user namespaces
            cpu = next(line for line in limits if line.startswith("Max cpu time"))
        return cpu.split()[3:5] == ["unlimited", "unlimited"]
    except (OSError, StopIteration):
        return False


def jail_problems(jail: psutil.Process) -> list[str]:
    """A warm jail is bubblewrap -> zygote, its pid-namespace init -> fork server (-> at most
    one idle spare child)."""
    try:
        (zygote,) = jail.children()
        (forker,) = zygote.children()
        extra = forker.children(recursive=True)
    except (ValueError, psutil.Error) as exc:
        return [f"jail {jail.pid}: unexpected tree ({exc})"]
    if len(extra) > 1 or (extra and not idle_spare(extra[0])):
        return [f"jail {jail.pid}: fork server has {[describe(p.pid) for p in extra]}"]
    return []


def assert_no_stray_process(server_pid: int, others_before: set[int]) -> None:
    """Every sandbox process belongs to a warm jail, and no jail holds a grading process."""
    # The zygote reaps a batch's child and forks its next spare right after answering:
    # give it a moment to get there (this waits for a state, it does not time anything).
    deadline = time.monotonic() + 15
    while True:
        jails = jails_of(server_pid)
        problems = [p for jail in jails for p in jail_problems(jail)]
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not problems
    # Zombies are left out: they run nothing, and parallel test runs on this host leave their own.
    stray = {pid for pid in sandbox_processes() if not accounted_for(pid, server_pid)}
    stray = {pid for pid in stray if not is_jail(psutil.Process(pid))}
    stray = {pid for pid in stray if _status(pid) != psutil.STATUS_ZOMBIE}
    assert not stray, [describe(pid) for pid in stray]
    others = {c.pid for c in psutil.Process(server_pid).children()} - {j.pid for j in jails}
    assert others == others_before, "the grader's other worker processes changed"


@pytest.fixture(scope="module")
def baseline(service: ServiceProcess, stub: Stub) -> set[int]:
    honest_batch(stub)
    honest_batch(stub, BYSTANDER)
    jails = jails_of(service.proc.pid)
    assert len(jails) >= 2, "the attacker tenant's two workers should be warm"
    return {c.pid for c in psutil.Process(service.proc.pid).children()} - {j.pid for j in jails}


def test_attack_suite_is_big_enough() -> None:
    assert len(ATTACKS) >= 60
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(service: ServiceProcess, stub: Stub, baseline: set[int], attack: Attack) -> None:
    jails_before = {j.pid for j in jails_of(service.proc.pid)}
    item = {"secret": SECRET, **attack.item}
    entry = (attack.output_text, item, attack.output_json) if attack.output_json else (attack.output_text, item)
    response = grade(stub, python_spec(attack.source), [entry], tenant=TENANT)
    (result,) = response.results
    if attack.kinds:
        assert result.HasField("error"), f"expected {sorted(attack.kinds)}, got score {result.score}"
        kind = KIND.Name(result.error.kind).removeprefix("GRADE_ERROR_KIND_").lower()
        assert kind in attack.kinds, f"{kind}: {result.error.message[:300]}"
        assert SECRET not in result.error.message
    else:
        assert not result.HasField("error"), f"{result.error.kind}: {result.error.message[:300]}"
        assert result.score == attack.score
    # The service still serves, the next honest grades are right (the attacker's and another
    # tenant's), no worker was killed or restarted, nothing is left behind.
    honest_batch(stub)
    honest_batch(stub, BYSTANDER)
    assert {j.pid for j in jails_of(service.proc.pid)} == jails_before, "a worker jail was killed or restarted"
    assert_no_stray_process(service.proc.pid, baseline)


def test_kills_and_workers_are_in_metrics(service: ServiceProcess, stub: Stub, baseline: set[int]) -> None:
    response = grade(stub, python_spec("def grade(s, i):\n    while True: pass"), [("x", {})], tenant=TENANT)
    assert scores(response) == ["TIMEOUT"]
    text = service.metrics()
    kills = re.search(r'rft_grader_sandbox_kills_total\{reason="timeout"\} (\S+)', text)
    assert kills and float(kills.group(1)) >= 1
    # Tenants appear as pseudonyms: /metrics is read without credentials.
    assert re.search(rf'rft_grader_sandbox_workers\{{tenant="{tenant_label(TENANT)}"\}} 2\.0', text)
    assert f'tenant="{TENANT}"' not in text


def test_batch_pins_the_culprit_and_keeps_other_scores(stub: Stub, baseline: set[int]) -> None:
    source = (
        "import os\n"
        "def grade(s, i):\n"
        "    t = s['output_text']\n"
        "    if t == 'hang':\n        while True: pass\n"
        "    if t == 'die':\n        os._exit(3)\n"
        "    if t == 'oom':\n        return len(bytearray(10**10))\n"
        "    return len(t) / 100\n"
    )
    texts = ["a", "hang", "bb", "die", "ccc", "oom", "dddd"]
    response = grade(stub, python_spec(source), [(t, {}) for t in texts], tenant=TENANT)
    assert scores(response) == [0.01, "TIMEOUT", 0.02, "CRASHED", 0.03, "RESOURCE_LIMIT", 0.04]


@pytest.mark.parametrize("victim", [TENANT, "alice"], ids=["same_tenant", "other_tenant"])
def test_graded_code_cannot_reach_earlier_batches(
    service: ServiceProcess, stub: Stub, baseline: set[int], victim: str
) -> None:
    """Issue #13, item 1: a grader walked its frames up to the zygote's request loop and read
    the previous batch (grader source, samples, items, the code cache)."""
    token = secrets.token_hex(8)
    source = f"# VICTIM-{token}\n{HONEST}"
    items = [("x" * (i % 100), {"note": f"VICTIM-{token[::-1]}"}) for i in range(64)]
    response = grade(stub, python_spec(source), items, tenant=victim)
    assert scores(response) == [(i % 100) / 100 for i in range(64)]
    # 64 samples: both of the attacker's workers run the probe, each right after a batch.
    response = grade(stub, python_spec(PREVIOUS_BATCH_PROBE), [("x", {})] * 64, tenant=TENANT)
    leaks = [r.error.message[:300] for r in response.results if r.HasField("error")]
    assert not leaks, leaks[0]
    assert scores(response) == [0.0] * 64
    honest_batch(stub)
    honest_batch(stub, BYSTANDER)
    assert_no_stray_process(service.proc.pid, baseline)


def test_ipc_objects_do_not_outlive_the_batch(service: ServiceProcess, stub: Stub, baseline: set[int]) -> None:
    """Issue #13, item 2: SysV shared memory, message queues, semaphores and POSIX message
    queues are refused; none of them outlives a grading process (each worker is probed)."""
    created = grade(stub, python_spec(IPC_CREATE), [("x", {})] * 64, tenant=TENANT)
    assert scores(created) == [0.0] * 64
    seen = grade(stub, python_spec(IPC_PROBE), [("x", {})] * 64, tenant=TENANT)
    assert scores(seen) == [0.0] * 64
    honest_batch(stub)
    honest_batch(stub, BYSTANDER)
    assert_no_stray_process(service.proc.pid, baseline)


def test_tenants_cannot_read_each_others_files(stub: Stub, baseline: set[int]) -> None:
    """Both graders run at once: each writes a file and looks for the other's everywhere it can."""
    source = """
import os, time
def grade(s, i):
    mine, theirs = i['mine'], i['theirs']
    with open('/tmp/' + mine, 'w') as f:
        f.write(i['secret'])
    own_ok = open('/tmp/' + mine).read() == i['secret']  # reading works: the probe could see a file
    deadline = time.time() + 1.2
    while time.time() < deadline:
        for root, dirs, files in os.walk('/'):
            if theirs in files:
                return 1.0
            if root == '/':
                dirs.remove('usr')  # read-only system files: too big to walk within the time limit
            if time.time() > deadline:
                break
        time.sleep(0.05)
    return 0.0 if own_ok else 0.5
"""
    spec = python_spec(source)

    def run(tenant: str, mine: str, theirs: str) -> list:
        return scores(grade(stub, spec, [("x", {"mine": mine, "theirs": theirs, "secret": SECRET})], tenant=tenant))

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        alice = pool.submit(run, "alice", "alice-file", "mallory-file")
        mallory = pool.submit(run, "mallory", "mallory-file", "alice-file")
        assert alice.result() == [0.0]
        assert mallory.result() == [0.0]


def test_invalid_utf8_on_the_wire_is_refused_and_service_serves(service: ServiceProcess, stub: Stub) -> None:
    request = grader_pb2.GradeRequest(tenant=TENANT)
    request.spec.update(python_spec(HONEST))
    request.items.add().sample.output_text = "MARKER-MARKER"
    raw = request.SerializeToString().replace(b"MARKER-MARKER", b"\xff\xfe\xfd\xc3(\xa0\xa1\x80\x80\xbf\xf0\x28\x8c")
    with service.channel() as channel:
        call = channel.unary_unary(
            "/rft.grader.v1.GraderService/Grade",
            request_serializer=lambda b: b,
            response_deserializer=grader_pb2.GradeResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as exc:
            call(raw, timeout=30)
    # grpcio answers a request it cannot parse with UNKNOWN or INTERNAL; what matters is what follows.
    assert exc.value.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    honest_batch(stub)


def test_json_nested_deeper_than_the_wire_allows_is_refused_and_service_serves(stub: Stub) -> None:
    with pytest.raises(grpc.RpcError):
        grade(stub, python_spec(HONEST), [("x", {}, nested(100))], tenant=TENANT)
    honest_batch(stub)


def test_without_bubblewrap_python_is_refused_with_the_reason(tmp_path: pathlib.Path) -> None:
    args = ["--data-dir", str(tmp_path), "--sandbox-bwrap-path", "/nonexistent/bwrap"]
    with ServiceProcess("rft-grader", args) as proc, proc.channel() as channel:
        stub = Stub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            grade(stub, python_spec(HONEST), [("x", {})])
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "bubblewrap" in exc.value.details()
        python = types(stub)["python"]
        assert not python.enabled and "bubblewrap" in python.description
        assert "PYTHON GRADERS DISABLED" in proc.logs()


def test_weaker_mode_must_be_chosen_and_then_works(tmp_path: pathlib.Path) -> None:
    args = ["--data-dir", str(tmp_path), "--sandbox-bwrap-path", "/nonexistent/bwrap", "--sandbox-mode", "unjailed"]
    args += ["--sandbox-timeout-seconds", "2", "--sandbox-cpu-seconds", "2"]
    with ServiceProcess("rft-grader", args) as proc, proc.channel() as channel:
        stub = Stub(channel)
        assert types(stub)["python"].enabled
        response = grade(stub, python_spec(HONEST), [("x" * 42, {})])
        assert scores(response) == [0.42]
        fork = "import os\ndef grade(s, i):\n    os.fork()\n    return 1.0"
        assert scores(grade(stub, python_spec(fork), [("x", {})])) == ["EXCEPTION"]  # seccomp still holds
        spin = "def grade(s, i):\n    while True: pass"
        assert scores(grade(stub, python_spec(spin), [("x", {})])) == ["TIMEOUT"]
        assert "WEAKER MODE" in proc.logs()


def test_max_tenants_bounds_the_jails(tmp_path: pathlib.Path) -> None:
    """Issue #13, item 7: busy tenants beyond --sandbox-max-tenants wait for a slot instead of
    adding jails; every one of them is still graded right, and so is a tenant after them."""
    args = ["--data-dir", str(tmp_path), *LIMIT_FLAGS, "--sandbox-max-tenants", "2"]
    args += ["--sandbox-workers-per-tenant", "1", "--sandbox-tenant-wait-seconds", "55"]
    args += ["--sandbox-packages", ""]  # jails start fast: six tenants take turns in two slots
    slow = "import time\ndef grade(sample, item):\n    time.sleep(0.3)\n    return len(sample['output_text']) / 100\n"
    with ServiceProcess("rft-grader", args) as proc, proc.channel() as channel:
        stub = Stub(channel)
        peak, stop = [0], [False]

        def watch() -> None:
            while not stop[0]:
                peak[0] = max(peak[0], len(jails_of(proc.proc.pid)))
                time.sleep(0.01)

        def run(k: int) -> list:
            return scores(grade(stub, python_spec(slow), [("x" * k, {})] * 2, tenant=f"busy-{k}"))

        with concurrent.futures.ThreadPoolExecutor(7) as pool:
            watcher = pool.submit(watch)
            try:
                results = list(pool.map(run, range(1, 7)))
            finally:
                stop[0] = True
            watcher.result()
        assert results == [[k / 100] * 2 for k in range(1, 7)]
        assert peak[0] <= 2, f"{peak[0]} jails with --sandbox-max-tenants 2"
        assert scores(grade(stub, python_spec(HONEST), [("x" * 7, {})], tenant="after")) == [0.07]


def test_a_tenant_past_the_wait_gets_resource_exhausted(tmp_path: pathlib.Path) -> None:
    """Past --sandbox-tenant-wait-seconds the whole call is refused as RESOURCE_EXHAUSTED (the
    learner retries that), not graded as per-sample errors that would count against a job."""
    args = ["--data-dir", str(tmp_path), *LIMIT_FLAGS, "--sandbox-max-tenants", "1"]
    args += ["--sandbox-workers-per-tenant", "1", "--sandbox-tenant-wait-seconds", "0.5"]
    args += ["--sandbox-timeout-seconds", "20"]  # the holder's grade outlasts the latecomer's wait
    slow = "import time\ndef grade(sample, item):\n    time.sleep(4)\n    return 0.5\n"
    with ServiceProcess("rft-grader", args) as proc, proc.channel() as channel:
        stub = Stub(channel)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            before = {j.pid for j in jails_of(proc.proc.pid)}  # the start-up self-test's jail
            busy = pool.submit(grade, stub, python_spec(slow), [("x", {})], tenant="holder")
            deadline = time.monotonic() + 60
            while not ({j.pid for j in jails_of(proc.proc.pid)} - before) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # the holder's jail is up: let it take its sample before the latecomer asks
            with pytest.raises(grpc.RpcError) as refused:
                grade(stub, python_spec(HONEST), [("x", {})], tenant="latecomer")
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--sandbox-max-tenants" in refused.value.details()
            assert scores(busy.result()) == [0.5]
        assert scores(grade(stub, python_spec(HONEST), [("x" * 7, {})], tenant="latecomer")) == [0.07]
