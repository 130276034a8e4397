"""`api/serving.py`: the API served by gunicorn as in production, under a burst."""

import asyncio
import json
import signal
import sys
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from providers import ProviderStore
from tests.support.processes import spawn
from tests.support.trips import JOHN
from tools.audit import AuditReport, run_audit
from tools.processes import WorkerProcess, answers, free_port, wait_until

JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.mark.timeout(240)
def test_burst_of_300_bookings_to_one_api_process_loses_none(address: str, tmp_path: Path) -> None:
    task_queue, port = f"burst-{uuid.uuid4()}", free_port()
    common = {"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": task_queue}
    worker = WorkerProcess({**common, "PROVIDERS_DIR": str(tmp_path), "SIM_HOTEL_OUTAGE": "0"})
    worker.start()
    api, output = spawn([sys.executable, "starter.py"], {**common, "PORT": str(port)})
    try:
        output.wait_for("Booting worker")
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), api, "the API")

        def post(n: int) -> tuple[int, dict[str, str], dict[str, Any]]:
            body = json.dumps({**JOHN, "name": f"Burst {n}"}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/bookings", body, JSON_HEADERS, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    return response.status, dict(response.headers), json.load(response)
            except urllib.error.HTTPError as err:
                return err.code, dict(err.headers), json.load(err)

        with ThreadPoolExecutor(300) as pool:
            replies = list(pool.map(post, range(300)))
        accepted = [body["user_id"] for status, _, body in replies if status == 202]
        report = asyncio.run(finish_and_audit(address, accepted, tmp_path, task_queue))
        api.send_signal(signal.SIGTERM)
        api_status = api.wait(30)
    finally:
        api.kill()
        worker.stop()

    assert {status for status, _, _ in replies} <= {202, 429, 503}
    assert all("Retry-After" in headers for status, headers, _ in replies if status != 202)
    assert len(set(accepted)) == len(accepted) > 0
    assert report.clean, report.summary()
    assert report.outcomes.total() == len(accepted), "a booking was lost or is unfinished"
    assert report.outcomes["running"] == 0
    assert api_status == 0, "".join(output.lines)


async def finish_and_audit(
    address: str, user_ids: list[str], providers: Path, task_queue: str
) -> AuditReport:
    client = await Client.connect(address)
    await asyncio.gather(*(client.get_workflow_handle(uid).result() for uid in user_ids))
    return await run_audit(client, ProviderStore.open_all(providers), task_queue)
