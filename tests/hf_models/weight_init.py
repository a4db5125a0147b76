"""The project's equivalents of transformers' common model tests ``test_can_init_all_missing_weights`` and
``test_init_weights_can_init_buffers`` (``tests/test_modeling_common.py``): every parameter and buffer of a
model must be set by its weight init (``_init_weights``), since ``from_pretrained`` builds the model on the
meta device and initialises only what the checkpoint does not hold: a tensor the init skips is left as
whatever memory held (NaN, 1e38, ...)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers.initialization import TORCH_INIT_FUNCTIONS, no_init_weights

_RANDOM_INITS = ("uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                 "kaiming_normal_", "orthogonal_", "sparse_")


@contextmanager
def seeded_weight_init() -> Iterator[None]:
    """Every random init of transformers' weight init (``transformers.initialization``) and of ``torch.nn.init``
    (which a module's ``__init__`` may call itself, e.g. TNF's ``"ema"`` note start) draws from a generator
    seeded by its tensor's shape: two models built by different routes, which initialise their modules in
    different orders, must then agree exactly."""
    originals = {name: TORCH_INIT_FUNCTIONS[name] for name in _RANDOM_INITS}
    torch_originals = {name: getattr(torch.nn.init, name) for name in _RANDOM_INITS}

    def seeded(function: Callable) -> Callable:
        def draw(tensor: torch.Tensor, *args, generator: torch.Generator | None = None, **kwargs):
            if tensor.is_meta:  # a model built on meta draws nothing
                return function(tensor, *args, generator=generator, **kwargs)
            seed = hash(tuple(tensor.shape)) % 2**31
            return function(tensor, *args, generator=torch.Generator(tensor.device).manual_seed(seed), **kwargs)
        return draw

    draws = {name: seeded(function) for name, function in originals.items()}
    TORCH_INIT_FUNCTIONS.update(draws)
    for name, draw in draws.items():
        setattr(torch.nn.init, name, draw)
    try:
        yield
    finally:
        TORCH_INIT_FUNCTIONS.update(originals)
        for name, function in torch_originals.items():
            setattr(torch.nn.init, name, function)


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters(remove_duplicate=False)), **dict(model.named_buffers())}


def assert_init_sets_every_weight(model_class: type, config: Any) -> None:
    """``test_can_init_all_missing_weights``: ``from_pretrained`` with an empty checkpoint gives the weights
    of ``model_class(config)``, nothing left on the meta device; and ``init_weights()`` on a model whose
    memory holds NaN (built on meta, moved with ``to_empty``) sets every parameter and buffer."""
    with seeded_weight_init():
        fresh = model_class(copy.deepcopy(config))
        loaded = model_class.from_pretrained(None, config=copy.deepcopy(config), state_dict={})
    on_meta = [name for name, tensor in _tensors(loaded).items() if tensor.device.type == "meta"]
    assert not on_meta, f"left on the meta device: {on_meta}"
    expected, got = fresh.state_dict(), loaded.state_dict()
    assert sorted(got) == sorted(expected)
    differing = [name for name in expected if not torch.equal(got[name], expected[name])]
    assert not differing, f"not set as at construction by from_pretrained's init: {differing}"

    with torch.device("meta"):
        poisoned = model_class(copy.deepcopy(config))
    poisoned.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in _tensors(poisoned).values():
            tensor.fill_(float("nan") if tensor.is_floating_point() else -1)
    with seeded_weight_init():
        poisoned.init_weights()
    after = poisoned.state_dict()
    differing = [name for name in expected if not torch.equal(after[name], expected[name])]
    assert not differing, f"not set by _init_weights (still the memory's values): {differing}"


def assert_init_sets_every_buffer(model_class: type, config: Any) -> None:
    """``test_init_weights_can_init_buffers``: the buffers of a model built on meta, moved with ``to_empty``
    and initialised by ``init_weights()`` equal those its ``__init__`` defines (built without weight init)."""
    with no_init_weights():
        constructed = model_class(copy.deepcopy(config))
    with torch.device("meta"):
        initialised = model_class(copy.deepcopy(config))
    initialised.to_empty(device="cpu")
    initialised.init_weights()
    expected, got = dict(constructed.named_buffers()), dict(initialised.named_buffers())
    assert sorted(got) == sorted(expected)
    differing = [name for name in expected if not torch.equal(got[name], expected[name])]
    assert not differing, f"buffers not set by _init_weights: {differing}"
