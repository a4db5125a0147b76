import pytest
import torch


@pytest.fixture
def single_thread():
    """Tiny-graph training: one intra-op thread (no oversubscription on a shared CI box), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
