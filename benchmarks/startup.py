"""How long the `selfsup` command takes to answer before any work: listing the methods, and refusing a bad --data
path or an out-of-range number (issue 17: answered before torch and its libraries are imported).

    python benchmarks/startup.py        # writes benchmarks/results/startup.md

Each command runs 5 times in a fresh process; the table gives the median wall time and, for comparison, the time of
`python -c "import torch, lightning, transformers"` measured the same way.
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
COMMANDS = {
    "selfsup methods": ["-m", "selfsup.cli", "methods"],
    "selfsup train simclr --data /nonexistent/folder": ["-m", "selfsup.cli", "train", "simclr", "--data",
                                                        "/nonexistent/folder"],
    "selfsup train simclr --max-steps -1": ["-m", "selfsup.cli", "train", "simclr", "--max-steps", "-1"],
    "selfsup eval knn --checkpoint /no/such.ckpt": ["-m", "selfsup.cli", "eval", "knn", "--checkpoint", "/no/such.ckpt"],
    "(reference) import torch, lightning, transformers": ["-c", "import torch, lightning, transformers"],
}


def seconds(argv: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *argv], capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    rows = [(name, seconds(argv)) for name, argv in COMMANDS.items()]
    lines = ["# Time to the first answer", "", "`python benchmarks/startup.py` on this project's 2-core CPU machine "
             "(median of 5 fresh processes).", "", "| command | seconds |", "|---|---|"]
    lines += [f"| `{name}` | {t:.2f} |" for name, t in rows]
    out = HERE / "results" / "startup.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
