"""A tiny random-init vision-language model, built offline, for tests and benchmarks of the captioner.

Idefics3 (a SigLIP-style vision tower + a Llama text model) because vLLM serves it on the CPU without
torchvision. About 0.6 M parameters: 2 text layers at hidden 128, 1 vision layer at width 64 over 64x64
images in 16x16 patches (4 image tokens per frame after the pixel shuffle), a byte-level BPE tokenizer
trained here with `tokenizers` that holds Idefics3's special tokens, a chat template and an image
processor that needs no torchvision; all saved with save_pretrained in one folder. Random weights
write gibberish: what the tests check is that schema-constrained decoding still yields valid JSON.

    python -m captioner.tiny_vlm --out DIR     (needs torch, transformers, tokenizers)
"""

from __future__ import annotations

import argparse
import os
import time

IMAGE_SIZE = 64
PATCH = 16
SCALE = 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH) ** 2 // SCALE**2
SPECIAL = ["<|begin_of_text|>", "<end_of_utterance>", "<pad>", "<image>", "<fake_token_around_image>",
           "<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]

# Idefics3's template, accepting a plain string as content too (e.g. an assistant turn in a repair)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)

CORPUS = [
    "A man walks along a sunny beach while waves roll in behind him.",
    "The camera pans left across a city street at night, neon signs reflecting on wet asphalt.",
    "Close-up of a cat sleeping on a windowsill; soft natural daylight; a calm, cozy atmosphere.",
    "An aerial shot of a forest in autumn, documentary style, realistic colours.",
    "A rocket stands on the launch pad under a clear blue sky; cinematic lighting; tense atmosphere.",
    "Two people talk in a dim kitchen, handheld shot, warm tungsten light, mysterious mood.",
    "The text SALE 50% appears on a shop sign in the background.",
    '{"short_description": "", "dense_description": "", "background": "", "style": "", "shot_type": '
    '"medium shot", "lighting": "", "atmosphere": "", "camera_movement": "static shot", "tags": {"source": [], '
    '"quality": [], "other": []}, "text_in_frame": ""}',
    "zoom in, zoom out, pan up, pan down, tilt left, tilt right, around left, around right, close-up shot, long shot",
    "Measured: camera motion, confidence, on-screen text, motion speed. Describe the video frames as JSON.",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=768, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>",
                                   pad_token="<pad>", chat_template=CHAT_TEMPLATE)


def build(out: str, seed: int = 0) -> str:
    """Write the model, tokenizer, processor and chat template to `out`; returns `out`."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=PATCH)
    text = dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=SCALE,
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    model = Idefics3ForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    images = Idefics3ImageProcessorPil(size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE},
                                       do_image_splitting=False)
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN,
                                  chat_template=CHAT_TEMPLATE)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="build the tiny random-init Idefics3 used by the captioner's tests")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    start = time.monotonic()
    build(args.out, args.seed)
    print(f"{args.out} ({time.monotonic() - start:.1f} s)")


if __name__ == "__main__":
    main()
