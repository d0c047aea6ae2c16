"""Training throughput (images/s) of our MobileNetV3 Small/Large next to torchvision's and timm's, trained the
same way in the same run: 224x224, batch 32, AdamW, cross-entropy, channels_last (unless --no-channels-last),
fp32, on this machine's CPU (or --device cuda).

The models are measured in interleaved rounds (ours, torchvision, timm, ours, ...) so a load change on a shared
machine hits all of them alike; the best round per model is reported. Not a test: run it by hand.

    python benchmarks/train_speed.py --json train_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def build(source: str, name: str) -> torch.nn.Module:
    if source == "mobilenets":
        import mobilenets

        return mobilenets.create_model(name)
    if source == "torchvision":
        import torchvision

        return getattr(torchvision.models, name)()
    import timm

    return timm.create_model(name, pretrained=False)


PAIRS = {  # ours -> (torchvision, timm): the same architecture in each library
    "mobilenet_v3_small": ("mobilenet_v3_small", "mobilenetv3_small_100"),
    "mobilenet_v3_large": ("mobilenet_v3_large", "mobilenetv3_large_100"),
}


def images_per_s(model: torch.nn.Module, *, batch: int, res: int, steps: int, warmup: int, channels_last: bool,
                 device: torch.device) -> float:
    model.to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", action="append", choices=list(PAIRS), help="default: both")
    ap.add_argument("--json", default="train_speed.json", help="results file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    results = []
    for ours in args.model or list(PAIRS):
        tv, tm = PAIRS[ours]
        entries = [("mobilenets", ours), ("torchvision", tv), ("timm", tm)]
        models = {src: build(src, name) for src, name in entries}
        best = {src: 0.0 for src, _ in entries}
        for r in range(args.rounds):
            for src, _ in entries:
                ips = images_per_s(models[src], batch=args.batch, res=args.resolution, steps=args.steps,
                                   warmup=args.warmup if r == 0 else 1, channels_last=args.channels_last,
                                   device=device)
                best[src] = max(best[src], ips)
                print(f"round {r + 1}: {src:<11} {dict(entries)[src]:<22} {ips:7.1f} images/s", flush=True)
        peer = max(best["torchvision"], best["timm"])
        row = {"model": ours, **{f"{src}_images_per_s": round(best[src], 1) for src in best},
               "ratio_vs_faster_peer": round(best["mobilenets"] / peer, 3)}
        results.append(row)

    print(f"\ntraining images/s, {args.resolution}x{args.resolution}, batch {args.batch}, AdamW, "
          f"{'channels_last' if args.channels_last else 'NCHW'}, {device.type}, {torch.get_num_threads()} threads "
          f"(best of {args.rounds} rounds of {args.steps} steps), load average {os.getloadavg()[0]:.2f}")
    print(f"{'model':<20} {'mobilenets':>10} {'torchvision':>11} {'timm':>8} {'ours/faster peer':>17}")
    for r in results:
        print(f"{r['model']:<20} {r['mobilenets_images_per_s']:>10.1f} {r['torchvision_images_per_s']:>11.1f} "
              f"{r['timm_images_per_s']:>8.1f} {r['ratio_vs_faster_peer']:>17.3f}")
    meta = {"batch": args.batch, "resolution": args.resolution, "channels_last": args.channels_last,
            "device": str(device), "threads": torch.get_num_threads(), "rounds": args.rounds, "steps": args.steps,
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "load_average_end": os.getloadavg()}
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    print(f"-> {args.json}")


if __name__ == "__main__":
    main()
