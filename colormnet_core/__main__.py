"""Command line: `python -m colormnet_core {colorize,film,train,evaluate,download,convert} ...` (see --help)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import ColorMNetError


def _convert(args: argparse.Namespace) -> int:
    from .checkpoint import WEIGHTS_LICENSE, convert

    try:
        sha_in, sha_out = convert(args.source, args.target, force=args.force, dtype=args.dtype)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"in   {sha_in}  {args.source}")
    print(f"out  {sha_out}  {args.target}")
    print(f"note: the official ColorMNet weights are licensed {WEIGHTS_LICENSE}.")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .download import CMNET2_LICENSE_NOTICE, LICENSE_NOTICE, default_weights_dir, download_cmnet2, download_official

    folder = Path(args.dir) if args.dir else default_weights_dir()
    notice = LICENSE_NOTICE if args.model == "official" else CMNET2_LICENSE_NOTICE
    if not args.accept_license:
        print(f"error: {notice} Run again with --accept-license to accept it and download.", file=sys.stderr)
        return 2
    print(notice, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if total:
            print(f"\r{done / 2**20:7.1f} / {total / 2**20:.1f} MiB", end="", file=sys.stderr, flush=True)

    if args.model == "official":
        path = download_official(folder, accept_license=args.accept_license, hf_repo_id=args.hf_repo,
                                 progress=progress)
    else:
        path = download_cmnet2(folder, accept_license=args.accept_license,
                               release=args.model.removeprefix("cmnet2-dinov3-"), progress=progress)
    print(file=sys.stderr)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .cli import add_colorize_parser
    from .evaluate import add_evaluate_parser
    from .film.cli import add_film_parser
    from .training.cli import add_train_parser

    parser = argparse.ArgumentParser(prog="python -m colormnet_core", description="ColorMNet video colorization.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    add_colorize_parser(sub)
    add_film_parser(sub)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    conv = sub.add_parser("convert", help="convert a checkpoint to .safetensors (official names)",
                          description="Read a .pth (safely: tensors only) or .safetensors ColorMNet checkpoint "
                                      "and write it as .safetensors; prints both files' sha256.")
    conv.add_argument("source", help="input checkpoint (.pth, .pt, .safetensors)")
    conv.add_argument("target", help="output .safetensors")
    conv.add_argument("--force", action="store_true", help="overwrite an existing output")
    conv.add_argument("--dtype", choices=["keep", "float32", "float16"], default="keep")
    conv.set_defaults(handler=_convert)
    from .download import MODEL_CHOICES

    down = sub.add_parser("download", help="download the official or CMNET2 weights once (CC BY-NC-SA 4.0)",
                          description="Download a ColorMNet checkpoint, convert it to .safetensors and record its "
                                      "sha256: the official release (DINOv2 backbone) or one of CMNET2's fine-tuned "
                                      "DINOv3 checkpoints (dan64/cmnet2). The weights are licensed CC BY-NC-SA "
                                      "4.0 by their authors: no commercial use.")
    down.add_argument("--model", choices=MODEL_CHOICES, default="official",
                      help="which weights: official (default) or cmnet2-dinov3-p374099 (CMNET2's best, 38.46 dB "
                           "against 37.68 on its 131-clip validation), -p372402, -p369412")
    down.add_argument("--accept-license", action="store_true", help="accept the weights' CC BY-NC-SA 4.0 licence")
    down.add_argument("--dir", default=None, help="target folder (default: $COLORMNET_HOME or ~/.cache/colormnet)")
    down.add_argument("--hf-repo", default=None, metavar="OWNER/NAME",
                      help="official weights only: download from this Hugging Face repo instead of the GitHub release")
    down.set_defaults(handler=_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.handler(args)
    except ColorMNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
