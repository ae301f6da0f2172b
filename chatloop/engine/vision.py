"""The vision half of a vision-language model: pixels -> one input embedding per image token.

    encoder = VisionEncoder(loaded.model, runner.dtype)
    positions, vectors = encoder.embed(prompt_ids, pixels)   # on the engine thread, before prefill
    runner.prefill([prompt_ids], embeds=[(positions, vectors)])

The model's own vision encoder and connector (for SmolVLM: a SigLIP encoder, a pixel shuffle and a
projection into the text model's width) run as `transformers` runs them, in float32; the runner
then takes the features in place of the image tokens' embeddings, as the model's `inputs_merger`
does, so the rest of the prompt, the packed prefill and decoding are the text engine's one path.
"""

import torch

from chatloop.errors import UsageError
from chatloop.models.vision import Pixels


class VisionEncoder:
    def __init__(self, model, dtype: torch.dtype):
        self.model = model  # a transformers *ForConditionalGeneration
        self.image_token_id = int(model.config.image_token_id)
        self.dtype = dtype

    @torch.inference_mode()
    def embed(self, prompt_ids: list[int], pixels: Pixels) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions of the image tokens in `prompt_ids`, their vectors [n, hidden] in the runner's dtype)."""
        out = self.model.get_image_features(**pixels.tensors, return_dict=True).pooler_output
        features = torch.cat(list(out)) if isinstance(out, (list, tuple)) else out
        features = features.reshape(-1, features.shape[-1])
        positions = (torch.tensor(prompt_ids) == self.image_token_id).nonzero().flatten()
        if len(positions) != len(features):
            raise UsageError(f"the prompt has {len(positions)} image tokens for {pixels.count} image(s) that "
                             f"give {len(features)} feature vectors")
        return positions, features.to(self.dtype)
