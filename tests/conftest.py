import logging

import pytest
import torch

torch.set_num_threads(1)  # tiny tensors: a second thread only adds spin-wait contention
logging.getLogger("marr").setLevel(logging.INFO)


@pytest.fixture
def problem():
    from marr.synthetic import random_problem

    return random_problem(96, 128, tokens=1024, drift=0.2, seed=7)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """A tiny DVC project (tests/pipeline_fixture.py) after one real `dvc repro`: (root, stdout)."""
    import sys

    from tests.pipeline_fixture import make_project, run

    root = make_project(tmp_path_factory.mktemp("pipeline"))
    proc = run([sys.executable, "-m", "dvc", "repro"], root)
    return root, proc.stdout
