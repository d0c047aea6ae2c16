"""Inference speed of mobilenets' exports against torchvision's, in one run (see mobilenets.export.bench).

    python benchmarks/inference.py [--quick] [--model mobilenet_v3_large] [--threads 2] [--skip executorch]

Same as ``mobilenets bench``. Writes benchmarks/results/bench.json and bench.png.
"""

import sys

from mobilenets.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
