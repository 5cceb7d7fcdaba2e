"""The Prefect flow runs the DVC pipeline and publishes the metrics table."""

import os

import pandas as pd
import pytest

from tests.pipeline_fixture import set_param


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def test_pipeline_flow_reruns_the_changed_branch_and_publishes_metrics(harness, tiny_project):
    from prefect.client.orchestration import get_client

    from pipelines.flows import pipeline_flow

    root, _ = tiny_project
    set_param(root, ["configs", "gptq-w3", "damp"], 0.05)
    rows = pipeline_flow(str(root))
    summary = pd.read_csv(root / "reports/summary.csv")
    assert rows == len(summary) > 0
    recon = (root / "data/quant/tiny-llm/gptq-w3/reconstruct.json").stat().st_mtime
    assert recon > (root / "data/hessians/tiny-llm/manifest.json").stat().st_mtime

    import asyncio

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    keys = {a.key for a in asyncio.run(artifacts())}
    assert "marr-metrics" in keys
