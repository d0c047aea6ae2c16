"""``mobilenets models`` and ``mobilenets profile``: cost accounting beside the papers' figures."""

from __future__ import annotations

import argparse

from .common import float_range, format_table, int_range, mark, model_name, model_names


def _classifier_rows(names) -> None:
    from ..catalog import model_catalog

    rows = model_catalog(names)
    table = []
    for r in rows:
        p = r.published
        table.append([
            r.model, f"{r.width:g}", r.resolution,
            f"{r.params / 1e6:.3f}", "" if p is None else f"{p.params_m:g}",
            "*" if p and p.params_note else mark(r.params_ok),
            f"{r.madds / 1e6:.1f}", "" if p is None else f"{p.madds_m:g}", "*" if p and p.madds_note else mark(r.madds_ok),
            "" if p is None else f"{p.top1:g}",
        ])
    print(format_table(
        ["model", "width", "res", "params(M)", "paper", "", "MAdds(M)", "paper", "", "top-1"], table,
        "lrrrrlrrlr",
    ))
    print("\nparams: 1000 classes, batch norm included; MAdds: conv and FC multiply-adds only (the papers' count), "
          "plus V4's attention matmuls.")
    print("ok: within 1.5% (or 0.6M) MAdds and 3.5% (or equal as printed) params of the paper.")
    for r in rows:
        for note in (r.published.params_note, r.published.madds_note) if r.published else ():
            if note:
                print(f"* {r.model} {r.width:g}/{r.resolution}: {note}")


def _options(options) -> str:
    return " ".join(f"{k}={v}" for k, v in dict(options).items())


def _detector_rows() -> None:
    from ..detection.costs import measure_all

    rows = measure_all()
    print(format_table(
        ["row", "source", "model", "options", "count", "params(M)", "paper", "", "MAdds(B)", "paper", ""],
        [[m.row.label, m.row.source, m.row.model, _options(m.row.options), m.row.convention, f"{m.params_m:.3f}",
          f"{m.row.published_params_m:g}", mark(m.params_ok), f"{m.madds_b:.3f}", f"{m.row.published_madds_b:g}",
          mark(m.madds_ok) if m.row.madds_reproduced else "*"] for m in rows],
        "lllllrrlrrl"))
    print("\nat 320x320; class slots include background; 'paper' boxes: 3 on the first map, 6 elsewhere (TF OD API).")
    print("params: conv = conv/FC weights and the biases they have, no batch norm (the TF configs' and V3 Table 6's "
          "count); all = every parameter (torchvision's meta). MAdds: conv/FC multiply-adds.")
    print("ok: rounds to the printed figure at its printed digits.")
    for m in rows:
        if m.row.note:
            print(f"* {m.row.label} ({m.row.source}): {m.row.note}")


def _segmenter_rows() -> None:
    from ..detection.costs import printed_match
    from ..segmentation.costs import PUBLISHED_COSTS, measure

    table, notes = [], []
    for row in PUBLISHED_COSTS:
        m = measure(row)
        ours = m.madds[row.convention] / 1e9
        if row.madds_b is None:
            ok = ""
        elif printed_match(ours, row.madds_b):
            ok = "ok"
        else:
            ok = "~" if abs(ours / row.madds_b - 1) <= 0.02 else "OFF"
        size = "x".join(map(str, row.input_size)) + (f" x{len(row.sizes)} passes" if len(row.sizes) > 1 else "")
        table.append([row.source, row.model, _options(row.options), size, f"{m.params / 1e6:.3f}",
                      "" if row.params_m is None else f"{row.params_m:g}",
                      "" if row.params_m is None else mark(printed_match(m.params / 1e6, row.params_m)),
                      f"{m.madds['conv'] / 1e9:.3f}", f"{ours:.3f}", row.convention,
                      "" if row.madds_b is None else f"{row.madds_b:g}", ok])
        if row.note and row.note not in notes:
            notes.append(row.note)
    print(format_table(["source", "model", "options", "input", "params(M)", "paper", "", "MAdds(B) conv",
                        "counted", "as", "paper", ""], table, "llllrrlrrlrl"))
    print("\nparams: every parameter, batch norm included (what reproduces V3 Table 7 and V2 Table 7).")
    print("MAdds: 'conv' = conv/FC multiply-adds; 'tf-atrous' counts dilated convs as TF 1.x runs them (space-to-"
          "batch on a grid padded to the rate); 'tf-graph' adds TF's element-wise ops (see segmentation/costs.py).")
    print("ok: rounds to the printed figure; ~: within 2%.")
    for n in notes:
        print(f"* {n}")


def _models(args: argparse.Namespace) -> int:
    tasks = ("classification", "detection", "segmentation") if args.task == "all" else (args.task,)
    for i, task in enumerate(tasks):
        if len(tasks) > 1:
            print(("\n" if i else "") + f"== {task} ==")
        if task == "classification":
            _classifier_rows(args.model)
        elif task == "detection":
            _detector_rows()
        else:
            _segmenter_rows()
    return 0


def _profile(args: argparse.Namespace) -> int:
    import torch

    from ..factory import create_model
    from ..profile import profile

    from ..registry import get_model_entry

    options = {} if args.num_classes is None else {"num_classes": args.num_classes}
    if get_model_entry(args.model).task == "detection":
        options["image_size"] = args.resolution  # the default boxes' size (the convolutions take any size)
    with torch.device("meta"):  # shapes only: any width and resolution cost no memory and no time
        model = create_model(args.model, width=args.width, **options)
    prof = profile(model, args.resolution)
    if not args.summary:
        print(format_table(
            ["layer", "type", "output", "params", "MAdds"],
            [[r.name, r.op_type, "x".join(map(str, r.out_shape)), f"{r.params:,}", f"{r.madds:,}"]
             for r in prof.layers],
            "llrrr",
        ))
        print()
    print(f"{args.model} width {args.width:g} at {args.resolution}x{args.resolution}: "
          f"{prof.params:,} params ({prof.layer_params:,} in conv/FC layers), {prof.madds:,} MAdds "
          f"({prof.madds / 1e6:.1f}M)\n")
    print(format_table(
        ["type", "MAdds", "% MAdds", "params", "% params"],
        [[t, f"{m:,}", f"{100 * m / prof.madds:.2f}", f"{p:,}", f"{100 * p / prof.layer_params:.2f}"]
         for t, (m, p) in prof.by_type().items()],
    ))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("models", help="every registered model with params and MAdds beside the papers' figures")
    p.add_argument("--task", choices=("all", "classification", "detection", "segmentation"), default="all",
                   help="which table(s): the classifiers at every published width/resolution, the published "
                        "SSDLite rows, the published LR-ASPP / DeepLabv3 rows; all: the three")
    p.add_argument("--model", action="append", type=model_name(), metavar="NAME",
                   help=f"classifiers: only this model (repeatable): {model_names()}")
    p.set_defaults(handler=_models)

    p = sub.add_parser("profile", help="per-layer params and MAdds, and the per-operator-type breakdown")
    p.add_argument("model", type=model_name(None), metavar="MODEL", help=model_names(None))
    p.add_argument("--width", type=float_range(0, 4, lo_open=True), default=1.0, help="the width multiplier")
    p.add_argument("--resolution", type=int_range(32, 4096), default=224, help="the square input side")
    p.add_argument("--num-classes", type=int_range(0, 100_000),
                   help="classifier outputs (default 1000) / class slots (default: the model's: 91 COCO for "
                        "SSDLite incl. background, 21 VOC for segmenters)")
    p.add_argument("--summary", action="store_true", help="only the totals and the per-type breakdown")
    p.set_defaults(handler=_profile)
