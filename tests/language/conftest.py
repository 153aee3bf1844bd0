"""Fixtures for the language tests; the helpers live in lang_toydata.py (a unique module name)."""
import pytest
import torch

from lang_toydata import write_toy_root


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread in these tests: on a small shared CPU two OpenMP threads spin against each other's
    load (an 80x slowdown was seen). Restored afterwards, so other packages' tests are untouched."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    return write_toy_root(tmp_path_factory.mktemp("toydata"))
