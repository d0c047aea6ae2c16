"""The checks every weights file passes before anything is built from it: a reader hands over validated tensors
or raises a one-line :class:`MobileNetsError` naming the file and the tensors at fault.

- :func:`check_state_dict`: a mapping of string keys to plain (strided) tensors;
- :func:`check_values`: a float16 / bfloat16 / float32 / float64 dtype (``num_batches_tracked`` excepted), data on
  the CPU, values finite as float32 (what a model holds them in) and batch-norm variances not negative;
- :func:`check_shapes`: every tensor the shape the architecture the file claims or was matched to needs.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..errors import MobileNetsError, one_line

__all__ = ["check_state_dict", "check_values", "check_shapes", "short_list", "load_exact"]


def short_list(items, n: int = 4) -> str:
    items = sorted(map(str, items))
    return ", ".join(one_line(i, 120) for i in items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _bookkeeping(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def check_state_dict(obj, label: str) -> dict[str, torch.Tensor]:
    """``obj`` as a dict of string keys to tensors, else a :class:`MobileNetsError`."""
    if not isinstance(obj, Mapping) or not obj:
        raise MobileNetsError(f"{label}: not a state dict of tensors (holds {type(obj).__name__}"
                              + (", empty" if isinstance(obj, Mapping) else "") + ")")
    bad_keys = [k for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise MobileNetsError(f"{label}: a state dict whose keys are not all strings "
                              f"({len(bad_keys)} are not, e.g. {one_line(repr(bad_keys[0]), 60)})")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        kinds = sorted({type(obj[k]).__name__ for k in not_tensors})
        raise MobileNetsError(f"{label}: not a state dict of tensors ({len(not_tensors)} entries are "
                              f"{', '.join(kinds)}: {short_list(not_tensors)})")
    return dict(obj)


# The dtypes a weights file may store its tensors in. Float8 types are floating point too, but torch has no
# isfinite (or most other ops) for them, and no MobileNet is published in them.
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_values(tensors: Mapping[str, torch.Tensor], label: str) -> None:
    """Every tensor a dense float16 / bfloat16 / float32 / float64 tensor holding data (not a meta tensor) whose
    values are finite once cast to float32 (the dtype models hold weights in: a float64 1e300 would load as inf),
    and every batch-norm ``running_var`` at least 0 (a negative variance turns every output into NaN).
    ``num_batches_tracked`` counters are bookkeeping, never loaded, and may be integers."""
    def kind(v: torch.Tensor) -> str:
        return str(v.dtype).removeprefix("torch.") + ("" if v.layout == torch.strided else
                                                      f", {str(v.layout).removeprefix('torch.')}")

    weights = {k: v for k, v in tensors.items() if not _bookkeeping(k)}
    bad_type = [f"{k} ({kind(v)})" for k, v in weights.items()
                if v.layout != torch.strided or v.is_quantized or v.dtype not in WEIGHT_DTYPES]
    if bad_type:
        raise MobileNetsError(f"{label}: weights must be dense float16 / bfloat16 / float32 / float64 tensors; "
                              f"{len(bad_type)} are not: {short_list(bad_type)}")
    no_data = [k for k, v in weights.items() if v.device.type != "cpu"]
    if no_data:  # torch.load(map_location="cpu") leaves meta tensors (shapes without values) on "meta"
        raise MobileNetsError(f"{label}: {len(no_data)} tensor(s) hold no values on the CPU ("
                              f"{short_list(f'{k} on {weights[k].device.type}' for k in no_data)}); not loaded")
    bad_values = [k for k, v in weights.items()
                  if not bool(torch.isfinite(v if v.dtype != torch.float64 else v.float()).all())]
    if bad_values:
        raise MobileNetsError(f"{label}: NaN or infinite values in {len(bad_values)} tensor(s): "
                              f"{short_list(bad_values)}; not loaded")
    negative = [k for k, v in weights.items() if k.endswith("running_var") and bool((v < 0).any())]
    if negative:
        raise MobileNetsError(f"{label}: negative batch-norm variances in {len(negative)} tensor(s): "
                              f"{short_list(negative)}; not loaded")


def check_shapes(have: Mapping[str, torch.Tensor], want: Mapping[str, tuple[int, ...]], label: str,
                 what: str) -> None:
    """``have``'s keys and shapes exactly ``want``'s (``what`` names the architecture in the message)."""
    missing = set(want) - set(have)
    unexpected = set(have) - set(want)
    wrong = [f"{k} {tuple(have[k].shape)} vs {tuple(want[k])}" for k in set(want) & set(have)
             if tuple(have[k].shape) != tuple(want[k])]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing ({short_list(missing, 3)})" if missing else "",
                 f"{len(unexpected)} unexpected ({short_list(unexpected, 3)})" if unexpected else "",
                 f"{len(wrong)} of another shape (file vs {what}: {short_list(wrong, 2)})" if wrong else ""]
        raise MobileNetsError(f"{label}: tensors do not fit {what}: " + "; ".join(p for p in parts if p))


def load_exact(model, tensors: Mapping[str, torch.Tensor], label: str, what: str) -> None:
    """Load ``tensors`` (our keys) into ``model``, all or nothing: every tensor the model has (bookkeeping
    counters aside) must be there with its shape, and nothing else, else a :class:`MobileNetsError` listing the
    missing, unexpected and mis-shaped ones and nothing is loaded."""
    current = model.state_dict()
    want = {k: tuple(v.shape) for k, v in current.items() if not _bookkeeping(k)}
    check_shapes(tensors, want, label, what)
    model.load_state_dict({**current, **{k: v.to(current[k].dtype) for k, v in tensors.items()}})
