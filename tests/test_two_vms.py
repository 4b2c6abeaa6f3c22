"""Two VMs and one PostgreSQL, all real processes (tests/two_vms.py): a VM killed -9 mid-run with Sinch failing
over to the other, two VMs receiving the same notices at the same instant, and PostgreSQL stopped and crashed
under load. Nothing acknowledged may be lost, nothing processed twice, and the application must get each
notice exactly once once it drops repeats by webhook-id. The figures are printed past pytest's capture."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pg import Cluster
from tests.servers import KeepAlive
from tests.two_vms import (
    Vm,
    body,
    deliver,
    delivered_once,
    filed_once,
    find_all,
    wait_until_drained,
)
from tests.webhook_app import App

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # real stacks, kill -9, PostgreSQL restarts

FAILOVER_TOTAL = 2000
RESENT_AFTER_ACK = 300
RACE_TOTAL = 200
OUTAGE_TOTAL = 600


@pytest.fixture
def vms(pg_url: str, app: App, tmp_path: Path) -> Iterator[tuple[Vm, Vm]]:
    pair = (Vm(tmp_path / "a", "vm-a", pg_url, app.url), Vm(tmp_path / "b", "vm-b", pg_url, app.url))
    for vm in pair:
        vm.start()
    yield pair
    for vm in pair:
        vm.stop()


def test_failover_loses_nothing_and_repeats_nothing(
    vms: tuple[Vm, Vm], app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = vms
    to_a, to_b = a.client(), b.client()
    acked_by_a: list[int] = []
    to_b_after_failure = 0
    killed = threading.Event()

    def kill_a_mid_run() -> None:
        while len(acked_by_a) < FAILOVER_TOTAL // 3:
            time.sleep(0.001)
        a.kill()  # while the sender is in the middle of a request, and the worker of a commit
        killed.set()

    killer = threading.Thread(target=kill_a_mid_run, daemon=True)
    killer.start()
    for n in range(FAILOVER_TOTAL):
        if not killed.is_set() and to_a.post(body(n, "fo"), "application/json") == 200:
            acked_by_a.append(n)
            continue
        deliver(to_b, body(n, "fo"))  # no 200 from A: Sinch tries again, and the balancer sends it to B
        to_b_after_failure += 1
    killer.join(30)
    resent = random.Random(19).sample(acked_by_a, RESENT_AFTER_ACK)  # A's answers lost on the way back
    for n in resent:
        deliver(to_b, body(n, "fo"))
    a.start()  # A comes back, with what it had stored and claimed
    wait_until_drained([a, b])
    filed = filed_once([a, b], {f"fo-{n}" for n in range(FAILOVER_TOTAL)})
    delivered_once(app.received, filed)
    nodes = find_all(a, FAILOVER_TOTAL)
    assert find_all(b, FAILOVER_TOTAL) == nodes
    assert filed.duplicates >= RESENT_AFTER_ACK
    with capsys.disabled():
        print(
            f"\nfailover: {FAILOVER_TOTAL} notices, A acknowledged {len(acked_by_a)} before its kill -9,"
            f" B took {to_b_after_failure} after it and {RESENT_AFTER_ACK} repeats of A's; processed on A"
            f" {nodes['vm-a']}, on B {nodes['vm-b']}; duplicates {filed.duplicates}; webhooks received"
            f" {len(app.received)} for {FAILOVER_TOTAL} notices, each once by webhook-id"
        )


def test_the_same_notices_at_the_same_instant_on_two_vms_are_each_processed_once(
    vms: tuple[Vm, Vm], app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = vms
    together = threading.Barrier(2)

    def sender(client: KeepAlive) -> None:
        for n in range(RACE_TOTAL):
            together.wait(30)
            deliver(client, body(n, "race"))

    threads = [threading.Thread(target=sender, args=(vm.client(),)) for vm in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    wait_until_drained([a, b])
    filed = filed_once([a, b], {f"race-{n}" for n in range(RACE_TOTAL)})
    assert filed.duplicates == RACE_TOTAL  # every notice came twice: one copy processed, one duplicate
    delivered_once(app.received, filed)
    won = {vm.node: vm.processed() for vm in (a, b)}
    with capsys.disabled():
        print(
            f"\nrace: {RACE_TOTAL} notices posted to both VMs at once; processed {won}, {filed.duplicates} dups"
        )


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.2)


def post_to_both(vms: tuple[Vm, Vm], prefix: str, total: int, statuses: list[int | None]) -> None:
    """Sinch-like senders, one keep-alive connection per VM: notice n to VM n % 2, every fifth also to the
    other (a retry whose answer was lost). Every status is kept: the receivers must answer 200 throughout."""
    clients = [vm.client() for vm in vms]
    for n in range(total):
        targets = [n % 2, 1 - n % 2] if n % 5 == 0 else [n % 2]
        for target in targets:
            statuses.append(clients[target].post(body(n, prefix), "application/json"))


def test_postgresql_down_receivers_answer_workers_hold_then_file_everything_once(
    pg: Cluster, vms: tuple[Vm, Vm], capsys: pytest.CaptureFixture[str]
) -> None:
    statuses: list[int | None] = []
    sender = threading.Thread(target=post_to_both, args=(vms, "down", OUTAGE_TOTAL, statuses))
    sender.start()
    while len(statuses) < OUTAGE_TOTAL // 4:
        time.sleep(0.01)
    pg.stop("fast")
    try:
        while not all(vm.said("the index cannot be reached") for vm in vms):
            time.sleep(0.1)
        held = [vm.processed() for vm in vms]
        sender.join(120)
        time.sleep(2)  # the workers' probes come and go: nothing more is filed while it is down
        assert [vm.processed() for vm in vms] == held
        code, status = vms[0].cli("status")
        assert code == 1 and status["index"]["reachable"] is False
        assert any("the index cannot be reached" in alert for alert in status["attention"])
        wait_for(lambda: all(vm.index_up() == 0 for vm in vms))
        waiting = [vm.waiting() for vm in vms]
    finally:
        pg.start()
    wait_until_drained(list(vms))
    wait_for(lambda: all(vm.index_up() == 1 for vm in vms))
    assert set(statuses) == {200}  # the receivers never touch PostgreSQL
    filed_once(list(vms), {f"down-{n}" for n in range(OUTAGE_TOTAL)})
    for vm in vms:
        assert vm.said("the index cannot be reached") == 1
        assert vm.said("answers again: claiming resumes") == 1
    with capsys.disabled():
        print(
            f"\npostgresql down: {len(statuses)} postbacks all answered 200; held while down {waiting}"
            f" (filed before the stop: {held}); all filed once after it came back"
        )


def test_postgresql_crashed_mid_commit_under_load_files_everything_once(
    pg: Cluster, vms: tuple[Vm, Vm], capsys: pytest.CaptureFixture[str]
) -> None:
    """The workers are frozen while a backlog builds, then thawed: PostgreSQL is crashed (restart -m
    immediate) three times while they claim and file it as fast as they can, and the sender goes on."""
    statuses: list[int | None] = []
    for vm in vms:
        vm.signal_worker(signal.SIGSTOP)
    post_to_both(vms, "crash", OUTAGE_TOTAL // 2, statuses)
    sender = threading.Thread(target=post_to_both, args=(vms, "crash-more", OUTAGE_TOTAL // 2, statuses))
    for vm in vms:
        vm.signal_worker(signal.SIGCONT)
    sender.start()
    for _ in range(3):
        time.sleep(0.3)
        pg.restart("immediate")  # the server dies mid-transaction: claims and filings in flight are cut
    sender.join(120)
    wait_until_drained(list(vms))
    assert set(statuses) == {200}
    notices = {f"{prefix}-{n}" for prefix in ("crash", "crash-more") for n in range(OUTAGE_TOTAL // 2)}
    filed = filed_once(list(vms), notices)
    cut = [vm.said("the index cannot be reached") + vm.said("outcome unknown") for vm in vms]
    assert sum(cut) > 0, "no operation was in flight at any crash: the test proved nothing"
    with capsys.disabled():
        print(
            f"\npostgresql restarted -m immediate 3 times under load: {len(statuses)} postbacks,"
            f" {len(filed.processed)} processed once, {filed.duplicates} duplicates; operations cut per VM"
            f" (outages and claims read back) {cut}"
        )
