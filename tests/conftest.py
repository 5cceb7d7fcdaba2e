import logging

import pytest
import torch

torch.set_num_threads(2)
logging.getLogger("marr").setLevel(logging.INFO)


@pytest.fixture
def problem():
    from marr.synthetic import random_problem

    return random_problem(96, 128, tokens=1024, drift=0.2, seed=7)
