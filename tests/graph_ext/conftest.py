import pytest

from graftkit.runtime import single_thread as _one_thread


@pytest.fixture
def single_thread():
    """Tiny-graph training: one intra-op thread (no oversubscription on a shared CI box), restored after."""
    with _one_thread():
        yield
