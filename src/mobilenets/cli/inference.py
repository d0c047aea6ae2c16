"""The inference-path options ``predict`` and ``eval`` share (:class:`mobilenets.fast.InferenceOptions`)."""

from __future__ import annotations

import argparse


def add_inference_args(p: argparse.ArgumentParser) -> None:
    from ..fast import PRECISIONS

    g = p.add_argument_group("inference path (see README, GPU)")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="weights and activations in this type (bf16: GPU or CPU; fp16: GPU only); outputs float32")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format (fastest on GPUs)")
    g.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                   help="keep batch norms as layers (default: folded into the convolutions, the same function)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow first call)")
    g.add_argument("--cuda-graphs", action="store_true",
                   help="replay CUDA graphs captured per input shape (GPU only; with --compile: reduce-overhead)")


def inference_options(args: argparse.Namespace):
    """The options given, or None when they are all the defaults (the plain eager model runs)."""
    from ..fast import InferenceOptions

    options = InferenceOptions(precision=args.precision, channels_last=args.channels_last, fold_bn=args.fold_bn,
                               compile=args.compile, cuda_graphs=args.cuda_graphs)
    return None if options == InferenceOptions() else options
