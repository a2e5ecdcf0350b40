"""Fixtures shared by several test files."""

import os

import pytest
import torch

STARTED_IN = os.getcwd()


@pytest.fixture(autouse=True)
def away_from_the_callers_directory(tmp_path, monkeypatch):
    """Every test runs in its own empty directory: pytest is often started in the repository root, where a user's own
    data/ and runs/ live (the commands' defaults), and no test may read or write them."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def one_thread():
    """The tiny models' matrices are so small that a second thread only adds waiting, and one thread is immune to a
    busy machine's oversubscription. A file opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
