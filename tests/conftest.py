"""Fixtures shared by several test files."""

import os

import pytest
import torch

import datafiles
from media import scene_frames, write_video

STARTED_IN = os.getcwd()
ANSWERS = [("the person walks in and then sits", "a person"), ("then the scene is dark", "the video"),
           ("a clip of the scene with a person", "is in"), ("the video ends with the person", "and then")]


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


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Four pairs over two short synthetic videos, in our JSONL format."""
    root = tmp_path_factory.mktemp("dpo_data")
    videos = [write_video(root / f"v{i}.mp4", scene_frames(4, 5, seed=i), fps=5) for i in range(2)]
    pairs = [{"video": videos[i % 2], "instruction": "Describe the video.", "chosen": c, "rejected": r,
              "kind": "shuffle", "r": 16, "order": [1, 0]} for i, (c, r) in enumerate(ANSWERS)]
    datafiles.write_jsonl(root / "pairs_r16.jsonl", pairs)
    datafiles.write_jsonl(root / "pairs_r8.jsonl", pairs[::-1])
    return root
