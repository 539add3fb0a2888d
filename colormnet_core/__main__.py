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
    from .download import LICENSE_NOTICE, default_weights_dir, download_official

    folder = Path(args.dir) if args.dir else default_weights_dir()
    if not args.accept_license:
        print(f"error: {LICENSE_NOTICE} Run again with --accept-license to accept it and download.", file=sys.stderr)
        return 2
    print(LICENSE_NOTICE, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if total:
            print(f"\r{done / 2**20:7.1f} / {total / 2**20:.1f} MiB", end="", file=sys.stderr, flush=True)

    path = download_official(folder, accept_license=args.accept_license, hf_repo_id=args.hf_repo,
                             progress=progress)
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
    down = sub.add_parser("download", help="download the official weights once (CC BY-NC-SA 4.0)",
                          description="Download the official ColorMNet checkpoint, convert it to .safetensors and "
                                      "record its sha256. The weights are licensed CC BY-NC-SA 4.0 by their "
                                      "authors: no commercial use.")
    down.add_argument("--accept-license", action="store_true", help="accept the weights' CC BY-NC-SA 4.0 licence")
    down.add_argument("--dir", default=None, help="target folder (default: $COLORMNET_HOME or ~/.cache/colormnet)")
    down.add_argument("--hf-repo", default=None, metavar="OWNER/NAME",
                      help="download from this Hugging Face repo instead of the GitHub release")
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
