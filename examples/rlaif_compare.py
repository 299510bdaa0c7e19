"""Direct vs. indirect RLAIF at toy scale on CPU, with a report.

    python examples/rlaif_compare.py                      # the embedded Gemma 270M as policy and judge
    python examples/rlaif_compare.py --steps 4 --eval-judge-url http://HOST:8000/v1 \
        --eval-judge-model Qwen/Qwen2.5-7B-Instruct --eval-judge-api chat   # a larger evaluation judge

Same as `rewardgym rlaif compare ...`; writes runs/rlaif-compare/report.md (and report.json).
Trains with examples/rlaif_direct.toml and examples/rlaif_indirect.toml.
"""

import sys

from rewardgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["rlaif", "compare", *sys.argv[1:]]))
