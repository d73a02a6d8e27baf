"""The overview's parts: what each worker announces, and the charts as the page draws them."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from arq.worker import Worker

from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.service import ArqService
from src.arq.workers import announce, describe
from src.dashboard.charts import Bucket, failure_rate_chart, throughput_chart, totals
from tests.arq.helpers import enqueue, until, wait_for
from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import DASHBOARD, signed_in


async def test_a_running_job_counts_on_its_worker(
    client: httpx.AsyncClient,
    worker: Worker,
    browsers: Clients,
    service: ArqService,
    arq_settings: ArqSettings,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    job_id = (await enqueue(client, "sleep", kwargs={"seconds": 0, "until": str(gate)})).json()[
        "job_id"
    ]
    await wait_for(client, job_id, ("in_progress",))
    # The claim (what the status reads) comes a few loop turns before the worker's task exists.
    await until(lambda: describe(worker)["running"] == 1, "the worker to count the job")
    state = describe(worker)
    # What the next heartbeat sends, sent now.
    await announce(service.redis, arq_settings.queue_name, worker.ctx["worker_id"], state)
    [live] = await service.live_workers()
    assert live.worker_id == worker.ctx["worker_id"] and live.running == 1
    async with browsers() as root:
        await signed_in(root, "root")
        page = (await root.get(f"{DASHBOARD}/")).text
    row = re.search(
        rf"<tr>\s*<td><code>{re.escape(live.worker_id)}</code></td>.*?</tr>", page, re.S
    )
    assert row is not None
    assert re.findall(r"<td>([^<]*)</td>", row.group(0))[1] == "1"  # host, then jobs running
    gate.touch()
    await wait_for(client, job_id)
    assert describe(worker)["running"] == 0


async def test_a_worker_that_stops_beating_leaves_the_list(
    service: ArqService, arq_settings: ArqSettings
) -> None:
    queue = arq_settings.queue_name
    await service.redis.zadd(keys.workers_set(queue), {"gone:1:abc": 1_000})  # long ago
    await announce(service.redis, queue, "gone:1:abc", {"running": 3})
    assert await service.live_workers() == []


def test_the_charts_say_each_period_in_words() -> None:
    buckets = [
        Bucket(label="10:00", complete=3, failed=1),
        Bucket(label="<b>11:00</b>"),
        Bucket(label="12:00", complete=1, aborted=2),
    ]
    bars = str(throughput_chart(buckets, title="Finished <jobs>"))
    assert bars.count("<g><title>") == 3
    assert "10:00: 3 complete, 1 failed, 0 aborted" in bars
    assert "&lt;b&gt;11:00&lt;/b&gt;" in bars and "<b>" not in bars
    assert 'aria-label="Finished &lt;jobs&gt;"' in bars
    assert "style=" not in bars  # the CSP forbids inline style: classes only
    rates = str(failure_rate_chart(buckets, title="Failure rate"))
    assert rates.count("<circle") == 2  # the empty period has no rate
    assert "10:00: 25% failed (1 of 4)" in rates
    assert "no finished jobs" in str(failure_rate_chart([Bucket(label="x")], title="t"))
    assert totals(buckets) == Bucket(label="total", complete=4, failed=1, aborted=2)
