import pytest
import torch

from graftkit.runtime import single_thread


def test_single_thread_restores_the_callers_setting_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with single_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == before
