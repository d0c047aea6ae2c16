"""``mobilenets export`` and ``mobilenets bench``: deployment files verified in their runtimes, and speed."""

from __future__ import annotations

import argparse

from .common import add_refresh, int_range, model_name, model_names, output_path

CALIB_SIZE = 200  # --calib-size's default


def _check_int8_flags(args: argparse.Namespace) -> None:
    """The int8 flags' combinations, refused in the command's own words (the library's messages name its
    keyword arguments, ``calib=``)."""
    from ..errors import MobileNetsError
    from ..export.options import INT8_FORMATS

    if args.int8 and args.format not in INT8_FORMATS:
        raise MobileNetsError(f"--int8 works with --format {', '.join(INT8_FORMATS)}, not --format {args.format}")
    if args.int8 and args.calib is None:
        raise MobileNetsError("--int8 needs calibration images: add --calib DIR (an image folder) or --calib digits")
    if args.calib is not None and not args.int8:
        raise MobileNetsError("--calib is for --int8 (calibration images); to measure an fp32 export's accuracy "
                              "pass --eval DIR")
    int8_only = [flag for flag, given in (
        ("--calib-method", args.calib_method != "auto"), ("--calib-size", args.calib_size != CALIB_SIZE),
        ("--calib-select", args.calib_select != "spread"), ("--keep-float", bool(args.keep_float)),
        ("--full-range-weights", args.full_range_weights)) if given]
    if int8_only and not args.int8:
        raise MobileNetsError(f"{', '.join(int8_only)}: for int8 exports only (add --int8)")


def _export(args: argparse.Namespace) -> int:
    from ..export import export_model

    _check_int8_flags(args)
    report = export_model(
        args.weights, args.output, format=args.format, int8=args.int8, calib=args.calib, eval_data=args.eval,
        input_size=args.input_size, dynamic_batch=not args.static_batch, num_threads=args.threads,
        refresh=args.refresh, check_images=args.check_images, calib_method=args.calib_method,
        calib_size=args.calib_size, calib_select=args.calib_select, keep_float=tuple(args.keep_float or ()),
        reduce_range=False if args.full_range_weights else None,
    )
    print(report.summary())
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ..export.bench import DENSE_MODELS, BenchConfig, run_benchmark

    gpu = args.device != "cpu"
    models = args.model or ([m for m in BenchConfig.models if m not in DENSE_MODELS] if gpu else BenchConfig.models)
    run_benchmark(BenchConfig(
        models=tuple(models), resolution=args.resolution, threads=args.threads,
        quick=args.quick, out_dir=args.out_dir, skip=tuple(args.skip or ()), device=args.device,
        batch=args.batch or (256 if gpu else BenchConfig.batch),
    ))
    return 0


def add_commands(sub) -> None:
    from ..export.options import BENCH_MODELS, BENCH_RUNTIMES, DEFAULT_CHECK_IMAGES, DENSE_MODELS, FORMATS, SUFFIXES

    p = sub.add_parser("export", help="export a checkpoint to ONNX / TFLite / ExecuTorch / TorchScript, verified "
                                      "in its runtime",
                       description="Fold batch norm, write the file, run it in its runtime against PyTorch; a file "
                                   "that disagrees is not written. Every file carries its class names and "
                                   "preprocessing (layout, RGB order, resize / crop, scaling) in the format's "
                                   "metadata slot, under the key 'mobilenets'.")
    p.add_argument("--weights", required=True, metavar="CKPT",
                   help="a mobilenets checkpoint, or any weights file 'mobilenets convert' reads")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help=f"the deployment format: {', '.join(FORMATS)} (file suffixes "
                        f"{', '.join(SUFFIXES[f] for f in FORMATS)})")
    p.add_argument("--output", "-o", metavar="PATH", type=output_path("exported file"),
                   help="output file (default: the weights' base name with the format's suffix, in the current "
                        "folder)")
    p.add_argument("--int8", action="store_true",
                   help="post-training static int8 quantization (onnx, tflite, executorch; classifiers only)")
    p.add_argument("--calib", metavar="DIR", help="with --int8: calibration images, an image folder or 'digits' "
                                                  "(built-in)")
    p.add_argument("--calib-method", default="auto", metavar="METHOD",
                   help="int8 calibration: onnx minmax | percentile | entropy | distribution; tflite / executorch "
                        "histogram | minmax | moving_average; auto: the measured best per format")
    p.add_argument("--calib-size", type=int_range(1, 100_000), default=CALIB_SIZE, metavar="N",
                   help="int8: how many calibration images")
    p.add_argument("--calib-select", choices=("spread", "random"), default="spread",
                   help="int8: which calibration images: evenly spread over the source or a seeded "
                        "random sample")
    p.add_argument("--keep-float", action="append", choices=("stem", "classifier", "se", "hswish"),
                   help="int8: leave this part in float32 (repeatable): the first conv, the classifier, "
                        "squeeze-excite gates, h-swish")
    p.add_argument("--full-range-weights", action="store_true",
                   help="int8 onnx: 8-bit instead of 7-bit weights (only for CPUs with VNNI or ARM: without VNNI, "
                        "onnxruntime's kernels saturate on them)")
    p.add_argument("--eval", "--data", dest="eval", metavar="DIR",
                   help="classifiers: labelled images (class sub-folders, or 'digits') to report top-1 agreement "
                        "and accuracy on (default: --calib); detectors / segmenters: the dataset root whose val "
                        "images the export is verified on (Pascal VOC, COCO, a mask folder; default: the "
                        "built-in shapes set)")
    p.add_argument("--check-images", type=int_range(1, 100_000), default=DEFAULT_CHECK_IMAGES, metavar="N",
                   help="detectors / segmenters: how many val images (the first N) the verification runs on")
    p.add_argument("--input-size", type=int_range(32, 2048),
                   help="square input side (default: the checkpoint's crop size)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch at 1 even where the format allows any")
    p.add_argument("--threads", type=int_range(1, 1024), default=2, help="CPU threads for the verification run")
    add_refresh(p)
    p.set_defaults(handler=_export, native_output=True)  # the runtimes' own lines: hidden unless -v

    p = sub.add_parser("bench", help="latency and throughput of our exports and PyTorch paths against torchvision's")
    p.add_argument("--model", action="append", metavar="NAME",
                   type=model_name(None), help=f"only this model (repeatable): {model_names()}, or "
                                               f"the detector / segmenter rows {', '.join(DENSE_MODELS)} "
                                               f"(default: {', '.join(BENCH_MODELS)})")
    p.add_argument("--resolution", type=int_range(32, 1024), default=224,
                   help="the classifiers' input side (the detector and segmenter rows run at 320 and 520)")
    p.add_argument("--threads", type=int_range(1, 1024), default=2, help="CPU threads for every runtime")
    p.add_argument("--quick", action="store_true", help="fewer timing runs, no batch-32 throughput")
    p.add_argument("--skip", action="append", metavar="RUNTIME", choices=BENCH_RUNTIMES,
                   help=f"leave out a runtime: {', '.join(BENCH_RUNTIMES)} (repeatable)")
    p.add_argument("--out-dir", default="benchmarks/results", help="where the JSON and PNG go")
    p.add_argument("--device", default="cpu",
                   help="cpu: the export runtimes above; cuda (or cuda:N): PyTorch inference paths on the GPU (BN "
                        "folded, bf16, channels_last, CUDA graphs, torch.compile) vs torchvision's and timm's "
                        "models, batch-1 latency and large-batch throughput, bench_cuda.json")
    p.add_argument("--batch", type=int_range(1, 65_536), help="throughput batch (default 32 on cpu, 256 on cuda)")
    p.set_defaults(handler=_bench, native_output=True)
