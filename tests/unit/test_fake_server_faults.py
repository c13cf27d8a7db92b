"""The fake OpenAI server counts the faults it served, so fault tests can prove they ran."""

from __future__ import annotations

import httpx

from pytest_ragbench.llm.testing import CHAT_PATH, FakeOpenAIServer, Fault

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_served_faults_are_counted_by_kind_and_reset() -> None:
    with FakeOpenAIServer(faults=[Fault.server_error(502), Fault.malformed()]) as server:
        assert server.faults_served == 0
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            statuses = [client.post(CHAT_PATH, json=BODY).status_code for _ in range(3)]
            assert statuses == [502, 200, 200]  # the malformed reply is a 200 too
            assert server.faults_served == 2
            assert server.faults_served_by_kind() == {"status": 1, "malformed": 1}
            server.set_default(Fault.rate_limited())
            assert client.post(CHAT_PATH, json=BODY).status_code == 429
            assert server.faults_served_by_kind() == {"status": 2, "malformed": 1}
            server.reset_counts()
            assert server.faults_served == 0 and server.request_count == 0
