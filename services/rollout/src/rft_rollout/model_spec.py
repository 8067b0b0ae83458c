"""The state dict a weight update must send, read from the model directory.

transformers builds the model on the meta device (no memory, no weights read) and its
`state_dict()` gives every key in Hugging Face checkpoint format, tied ones such as
lm_head.weight included, with their shapes. This is the list GetModelInfo publishes
and every update is checked against. Blocking: call it off the event loop.
"""

from __future__ import annotations

import dataclasses

from rft_common.dtypes import DTYPES

from rft_rollout.domain import TensorSpec
from rft_rollout.weights import expected_size


@dataclasses.dataclass(frozen=True)
class ModelDescription:
    architecture: str
    num_parameters: int
    vocab_size: int
    tensors: tuple[TensorSpec, ...]


def describe_model(model_dir: str, dtype: str) -> ModelDescription:
    """State-dict specs of the model in `model_dir` as the engine holds it (`dtype`,
    a torch dtype name such as "float32")."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"engine dtype {dtype} has no wire dtype; expected one of {sorted(DTYPES)}")
    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    tensors = []
    for name, tensor in model.state_dict().items():
        # Integer buffers keep their dtype; floating weights take the engine's.
        tensor_dtype = dtype if tensor.is_floating_point() else str(tensor.dtype).removeprefix("torch.")
        shape = tuple(tensor.shape)
        tensors.append(TensorSpec(name, tensor_dtype, shape, expected_size(tensor_dtype, shape)))
    architectures = getattr(config, "architectures", None) or [type(model).__name__]
    return ModelDescription(
        architecture=architectures[0],
        num_parameters=sum(parameter.numel() for parameter in model.parameters()),
        vocab_size=int(config.get_text_config().vocab_size),
        tensors=tuple(tensors),
    )
