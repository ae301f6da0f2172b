"""A tiny randomly initialised SmolVLM (the Idefics3 architecture) for the vision-language tests.

No vision-language weights can be fetched in tests, so the architecture is built from a small
config: a 1-layer SigLIP encoder over 64×64 images in 16×16 patches, pixel shuffle ×2 (4 image
tokens per image), a 2-layer Llama text model, and the default model's tokenizer with SmolVLM's
special tokens and SmolVLM's chat template — saved with its processor as a model directory.
"""

import io
from pathlib import Path

# SmolVLM-256M/500M-Instruct's chat template.
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def make_tiny_vlm(directory: Path, base_tokenizer, seed: int = 0) -> Path:
    import copy

    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from chatloop.models.manifest import write_manifest

    tokenizer = copy.deepcopy(base_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]})
    tokenizer.chat_template = SMOLVLM_TEMPLATE
    end = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    torch.manual_seed(seed)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 64, "patch_size": 16, "initializer_range": 0.3}
    text = {"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 512, "initializer_range": 0.3, "tie_word_embeddings": True,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": end}
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=2, tie_word_embeddings=True,
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = end
    images = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 64},
                                       max_image_size={"longest_edge": 64})
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=SMOLVLM_TEMPLATE)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    write_manifest(directory, name="tiny-smolvlm", version="test")
    return directory


def png(seed: int, size=(48, 40)) -> bytes:
    """A random RGB picture, PNG-encoded."""
    import numpy as np
    from PIL import Image

    pixels = (np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


class Picture:
    """An image part's image as serving/images.py hands it on: `open()` gives the decoded RGB picture."""

    def __init__(self, seed: int):
        self.data = png(seed)

    def open(self):
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as img:
            return img.convert("RGB")
