"""Writes a Stable Diffusion 1.5-format checkpoint with random weights, for end-to-end tests of the
image-model workflows (the pictures it makes are noise; the graph must run).

The key names and shapes are the original CompVis/LDM layout of the SD 1.5 release, written out here
from the architecture (not copied from any checkpoint), so ComfyUI's detection picks "SD15":
  UNet   `model.diffusion_model.*`   (model_channels 320, channel_mult 1-2-4-4, 2 res blocks per level,
                                      attention at the first three levels, context_dim 768, conv proj_in)
  VAE    `first_stage_model.*`       (ch 128, ch_mult 1-2-4-4, z 4)
  CLIP   `cond_stage_model.transformer.text_model.*`  (ViT-L/14 text tower: 12 layers, width 768)
The shapes cannot shrink (ComfyUI derives the architecture from them), so the file is ~2.1 GB in fp16.
Never commit it.

    python scripts/make_sd15_checkpoint.py OUT.safetensors [--seed 0] [--dtype fp16|fp32]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

Shape = tuple[int, ...]
UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer.text_model."

TIME_DIM = 1280        # 4 x model_channels
CONTEXT_DIM = 768      # CLIP ViT-L/14 width


def _norm(prefix: str, ch: int) -> Iterator[tuple[str, Shape]]:
    yield f"{prefix}.weight", (ch,)
    yield f"{prefix}.bias", (ch,)


def _conv(prefix: str, c_out: int, c_in: int, k: int) -> Iterator[tuple[str, Shape]]:
    yield f"{prefix}.weight", (c_out, c_in, k, k)
    yield f"{prefix}.bias", (c_out,)


def _linear(prefix: str, c_out: int, c_in: int, bias: bool = True) -> Iterator[tuple[str, Shape]]:
    yield f"{prefix}.weight", (c_out, c_in)
    if bias:
        yield f"{prefix}.bias", (c_out,)


# -- UNet ------------------------------------------------------------------------------------------

def _unet_res(p: str, c_in: int, c_out: int) -> Iterator[tuple[str, Shape]]:
    yield from _norm(f"{p}.in_layers.0", c_in)
    yield from _conv(f"{p}.in_layers.2", c_out, c_in, 3)
    yield from _linear(f"{p}.emb_layers.1", c_out, TIME_DIM)
    yield from _norm(f"{p}.out_layers.0", c_out)
    yield from _conv(f"{p}.out_layers.3", c_out, c_out, 3)
    if c_in != c_out:
        yield from _conv(f"{p}.skip_connection", c_out, c_in, 1)


def _unet_transformer(p: str, c: int) -> Iterator[tuple[str, Shape]]:
    yield from _norm(f"{p}.norm", c)
    yield from _conv(f"{p}.proj_in", c, c, 1)
    b = f"{p}.transformer_blocks.0"
    for attn, kv_dim in (("attn1", c), ("attn2", CONTEXT_DIM)):
        yield from _linear(f"{b}.{attn}.to_q", c, c, bias=False)
        yield from _linear(f"{b}.{attn}.to_k", c, kv_dim, bias=False)
        yield from _linear(f"{b}.{attn}.to_v", c, kv_dim, bias=False)
        yield from _linear(f"{b}.{attn}.to_out.0", c, c)
    yield from _linear(f"{b}.ff.net.0.proj", 8 * c, c)   # GEGLU: value and gate, 4c each
    yield from _linear(f"{b}.ff.net.2", c, 4 * c)
    for n in ("norm1", "norm2", "norm3"):
        yield from _norm(f"{b}.{n}", c)
    yield from _conv(f"{p}.proj_out", c, c, 1)


def unet_shapes() -> Iterator[tuple[str, Shape]]:
    base, mult, attention_levels = 320, (1, 2, 4, 4), {0, 1, 2}
    p = UNET
    yield from _linear(f"{p}time_embed.0", TIME_DIM, base)
    yield from _linear(f"{p}time_embed.2", TIME_DIM, TIME_DIM)
    yield from _conv(f"{p}input_blocks.0.0", base, 4, 3)
    skips, ch, block = [base], base, 1
    for level, m in enumerate(mult):
        for _ in range(2):
            yield from _unet_res(f"{p}input_blocks.{block}.0", ch, base * m)
            ch = base * m
            if level in attention_levels:
                yield from _unet_transformer(f"{p}input_blocks.{block}.1", ch)
            skips.append(ch)
            block += 1
        if level != len(mult) - 1:
            yield from _conv(f"{p}input_blocks.{block}.0.op", ch, ch, 3)
            skips.append(ch)
            block += 1
    yield from _unet_res(f"{p}middle_block.0", ch, ch)
    yield from _unet_transformer(f"{p}middle_block.1", ch)
    yield from _unet_res(f"{p}middle_block.2", ch, ch)
    block = 0
    for level in reversed(range(len(mult))):
        for i in range(3):
            out = base * mult[level]
            yield from _unet_res(f"{p}output_blocks.{block}.0", ch + skips.pop(), out)
            ch, sub = out, 1
            if level in attention_levels:
                yield from _unet_transformer(f"{p}output_blocks.{block}.1", ch)
                sub = 2
            if level and i == 2:
                yield from _conv(f"{p}output_blocks.{block}.{sub}.conv", ch, ch, 3)
            block += 1
    yield from _norm(f"{p}out.0", ch)
    yield from _conv(f"{p}out.2", 4, ch, 3)


# -- VAE -------------------------------------------------------------------------------------------

def _vae_res(p: str, c_in: int, c_out: int) -> Iterator[tuple[str, Shape]]:
    yield from _norm(f"{p}.norm1", c_in)
    yield from _conv(f"{p}.conv1", c_out, c_in, 3)
    yield from _norm(f"{p}.norm2", c_out)
    yield from _conv(f"{p}.conv2", c_out, c_out, 3)
    if c_in != c_out:
        yield from _conv(f"{p}.nin_shortcut", c_out, c_in, 1)


def _vae_mid(p: str, c: int) -> Iterator[tuple[str, Shape]]:
    yield from _vae_res(f"{p}.mid.block_1", c, c)
    yield from _norm(f"{p}.mid.attn_1.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        yield from _conv(f"{p}.mid.attn_1.{name}", c, c, 1)
    yield from _vae_res(f"{p}.mid.block_2", c, c)


def vae_shapes() -> Iterator[tuple[str, Shape]]:
    base, mult, z = 128, (1, 2, 4, 4), 4
    enc, dec = f"{VAE}encoder", f"{VAE}decoder"
    yield from _conv(f"{enc}.conv_in", base, 3, 3)
    ch = base
    for level, m in enumerate(mult):
        for j in range(2):
            yield from _vae_res(f"{enc}.down.{level}.block.{j}", ch, base * m)
            ch = base * m
        if level != len(mult) - 1:
            yield from _conv(f"{enc}.down.{level}.downsample.conv", ch, ch, 3)
    yield from _vae_mid(enc, ch)
    yield from _norm(f"{enc}.norm_out", ch)
    yield from _conv(f"{enc}.conv_out", 2 * z, ch, 3)           # mean and log-variance
    yield from _conv(f"{VAE}quant_conv", 2 * z, 2 * z, 1)
    yield from _conv(f"{VAE}post_quant_conv", z, z, 1)
    ch = base * mult[-1]
    yield from _conv(f"{dec}.conv_in", ch, z, 3)
    yield from _vae_mid(dec, ch)
    for level in reversed(range(len(mult))):
        for j in range(3):
            yield from _vae_res(f"{dec}.up.{level}.block.{j}", ch, base * mult[level])
            ch = base * mult[level]
        if level:
            yield from _conv(f"{dec}.up.{level}.upsample.conv", ch, ch, 3)
    yield from _norm(f"{dec}.norm_out", ch)
    yield from _conv(f"{dec}.conv_out", 3, ch, 3)


# -- CLIP text encoder -----------------------------------------------------------------------------

def clip_shapes() -> Iterator[tuple[str, Shape]]:
    width, layers, vocab, positions = CONTEXT_DIM, 12, 49408, 77
    yield f"{CLIP}embeddings.token_embedding.weight", (vocab, width)
    yield f"{CLIP}embeddings.position_embedding.weight", (positions, width)
    for i in range(layers):
        p = f"{CLIP}encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield from _linear(f"{p}.self_attn.{proj}", width, width)
        yield from _norm(f"{p}.layer_norm1", width)
        yield from _norm(f"{p}.layer_norm2", width)
        yield from _linear(f"{p}.mlp.fc1", 4 * width, width)
        yield from _linear(f"{p}.mlp.fc2", width, 4 * width)
    yield from _norm(f"{CLIP}final_layer_norm", width)


def sd15_shapes() -> dict[str, Shape]:
    """Every tensor of an SD 1.5 checkpoint: key -> shape (1,066,235,307 parameters)."""
    shapes: dict[str, Shape] = {}
    for key, shape in (*unet_shapes(), *vae_shapes(), *clip_shapes()):
        if key in shapes:
            raise RuntimeError(f"duplicate key {key}")
        shapes[key] = shape
    return shapes


def _is_norm(key: str) -> bool:
    return any(n in key for n in ("norm", "in_layers.0.", "out_layers.0.", "out.0.")) and "proj" not in key


def random_tensor(key: str, shape: Shape, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Norm scales 1, biases 0, other weights N(0, 1/fan_in): activations stay finite through the
    network, so the sampler produces (noisy) pictures instead of NaNs."""
    if key.endswith(".bias"):
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1 and _is_norm(key):
        return torch.ones(shape, dtype=dtype)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    if "embedding" in key:
        fan_in = 1 / 0.02 ** 2   # CLIP's embedding init scale
    return (torch.randn(shape, generator=generator) / math.sqrt(fan_in)).to(dtype)


def make_checkpoint(path: Path, *, seed: int = 0, dtype: torch.dtype = torch.float16) -> int:
    """Writes the checkpoint; returns the number of parameters."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {key: random_tensor(key, shape, generator, dtype) for key, shape in sd15_shapes().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", "note": "random weights, SD 1.5 layout, for tests"})
    return sum(t.numel() for t in tensors.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output .safetensors file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    args = parser.parse_args()
    count = make_checkpoint(args.out, seed=args.seed,
                            dtype=torch.float16 if args.dtype == "fp16" else torch.float32)
    print(f"wrote {args.out}: {count:,} parameters ({args.out.stat().st_size / 2**30:.2f} GiB)")


if __name__ == "__main__":
    main()
