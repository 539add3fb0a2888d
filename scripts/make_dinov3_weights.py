"""Synthetic CMNET2 DINOv3 weights in CMNET2's exact release layout, from the fixture's recipe.

    python scripts/make_dinov3_weights.py --seed 7 --out /tmp/draw7 [--naming layer] [--no-backbone]

writes OUT/DINOv3FeatureV6_LocalAtten_p374099.pth (the whole network as a flat state dict, fine-tuned
backbone inside, CMNET2's names) and OUT/dinov3-vitb16/{config.json, model.safetensors} (another
draw: the "pretrained" backbone CMNET2 builds first and the .pth overrides). Seed 0 is the draw
tests/data/golden_dinov3 was made from; any other seed is an independent draw for re-checking
parity against CMNET2's own code (tests/data/golden_dinov3/README.md says how).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.golden_dinov3 import write_release  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="weight draw (0: the fixture's)")
    parser.add_argument("--out", required=True, type=Path, help="folder to write (CMNET2's weights/ layout)")
    parser.add_argument("--naming", choices=["model.layer", "layer"], default="model.layer",
                        help="backbone block naming: transformers >= 5 (model.layer, default) or 4.x (layer)")
    parser.add_argument("--no-backbone", action="store_true",
                        help="leave the backbone out of the .pth (the folder then provides it)")
    args = parser.parse_args(argv)
    path = write_release(args.out, args.seed, naming=args.naming, backbone_in_pth=not args.no_backbone)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
