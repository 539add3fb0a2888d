"""DINOv3 ViT-B/16 for PVGFE: the key-encoder backbone of CMNET2's ColorMNet checkpoints.

CMNET2 (dan64/cmnet2, `Segmentor_DINOv3` in model/resnet.py, 2026-09) swaps the official DINOv2
ViT-S/14 for a DINOv3 ViT-B/16 fine-tuned end to end. It runs the backbone with HuggingFace
`transformers` (`DINOv3ViTModel`); we build the same network with timm (`vit_base_patch16_dinov3`,
random weights, no download) and fill it from the checkpoint. Every numerical detail we match
(checked against transformers 5.25 block by block: <= 1e-6 on unit-scale activations):

* Input: the same tensor the DINOv2 branch gets, L' = (L - 50)/50 replicated to 3 channels, in
  [-1, 1]. No ImageNet mean/std normalisation (CMNET2 feeds the key encoder's input as it is).
* Padding: frames are already padded to multiples of 112 (centred, `preprocess.Padding`), which are
  multiples of 16; CMNET2's own bottom/right pad to 16 is then a no-op, and so is its crop.
* Tokens: [CLS, 4 registers, patches] (register tokens are HF `embeddings.register_tokens`, timm
  `reg_token`). The mask token is a pretraining parameter, unused here (kept for strict loading).
* Position: no absolute embedding; 2-D RoPE on the patch tokens only (not CLS/registers), base 100,
  head_dim 64: periods 100^(4i/64) for i < 16, patch-centre coordinates (k + 0.5)/n mapped to
  [-1, 1] per axis, angles 2 pi c / period tiled twice, rotate-half layout. No coordinate
  jitter, shift or rescale (those are training-time augmentations; eval mode).
* Blocks: pre-norm, LayerNorm eps 1e-5, 12 heads, exact (erf) GELU MLP 768 -> 3072 -> 768,
  LayerScale on both branches. q and v projections have biases, k has none (HF `key_bias=False`);
  after fine-tuning q/v biases are non-zero, so timm's `qkv_bias=True` variant with unfused q/k/v
  projections is used (its k bias is a fixed zero).
* Taken features: CMNET2 reads `hidden_states[i]` for i in [8, 9, 10, 11]. In transformers,
  hidden_states[0] is the embedding output (the input of block 0) and hidden_states[i] the output of
  block i - 1, so these are the outputs of blocks 7, 8, 9 and 10 (0-based) - NOT the last block, and
  NOT normed (the final LayerNorm only makes `last_hidden_state`). The CLS and 4 register tokens are
  dropped; each map is `B x 768 x H/16 x W/16`.
* Head: the 4 maps concatenated (3072 channels, block order), 1x1 conv 3072 -> 1536 without bias,
  BatchNorm (eps 1e-5, running statistics), ReLU. Patch 16 = the key stride, so no resize follows
  (the DINOv2 branch resizes stride 14 to 16); the result feeds the same three Fuse blocks.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .errors import InputError

DINO3_PATCH = 16
DINO3_DIM = 768
DINO3_BLOCKS = (7, 8, 9, 10)       # 0-based blocks = CMNET2's hidden_states[8..11]
DINO3_REGISTERS = 4
DINO3_CONCAT_DIM = DINO3_DIM * len(DINO3_BLOCKS)   # 3072
DINO3_OUT_DIM = 1536                               # what the Fuse blocks take (the DINOv2 width)


def build_dinov3_vitb16() -> nn.Module:
    """timm's `vit_base_patch16_dinov3` with q/v biases and unfused q/k/v, random weights, no head."""
    return timm.create_model(
        "vit_base_patch16_dinov3", pretrained=False, qkv_bias=True, qkv_fused=False, num_classes=0,
        dynamic_img_size=True)


def dinov3_intermediate_blocks(vit: nn.Module, x: Tensor, blocks: tuple[int, ...] = DINO3_BLOCKS,
                               checkpointed: bool = False) -> list[Tensor]:
    """Outputs of `blocks` (0-based), unnormed, patch tokens only, as maps.

    x: `B x 3 x H x W`, H and W multiples of 16 -> one `B x 768 x H/16 x W/16` map per block.
    checkpointed: where autograd records, keep only each block's input and run the block again in the
    backward pass (activation checkpointing, as CMNET2 trains its unlocked ViT): the same gradients for
    a fraction of the memory. The blocks have no dropout or drop-path, so the second run is the first.
    """
    b, _, h, w = x.shape
    if h % DINO3_PATCH or w % DINO3_PATCH:
        raise InputError(f"DINOv3 input must be a multiple of {DINO3_PATCH} pixels, got {h}x{w}.")
    gh, gw = h // DINO3_PATCH, w // DINO3_PATCH
    tokens, rope = vit._pos_embed(vit.patch_embed(x))       # [CLS, registers, patches], RoPE for the grid
    prefix = 1 + DINO3_REGISTERS
    outputs = []
    again = checkpointed and torch.is_grad_enabled()
    for i, block in enumerate(vit.blocks[: max(blocks) + 1]):
        if again:
            tokens = checkpoint(block, tokens, rope=rope, use_reentrant=False)
        else:
            tokens = block(tokens, rope=rope)
        if i in blocks:
            outputs.append(tokens[:, prefix:].reshape(b, gh, gw, DINO3_DIM).permute(0, 3, 1, 2))
    return outputs


class Dinov3Features(nn.Module):
    """DINOv3 blocks 7-10 concatenated, 1x1 conv + BN + ReLU: `B x 3 x H x W` -> `B x 1536 x H/16 x W/16`."""

    def __init__(self) -> None:
        super().__init__()
        self.vit = build_dinov3_vitb16()
        self.checkpointed = False    # activation checkpointing of the ViT's blocks, for training it
        # A pretraining parameter timm lacks: unused at inference, kept so checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DINO3_DIM))
        self.conv = nn.Conv2d(DINO3_CONCAT_DIM, DINO3_OUT_DIM, 1, bias=False)
        self.bn = nn.BatchNorm2d(DINO3_OUT_DIM)

    def forward(self, x: Tensor) -> Tensor:
        d16 = torch.cat(dinov3_intermediate_blocks(self.vit, x, checkpointed=self.checkpointed), dim=1)
        return F.relu(self.bn(self.conv(d16)))
