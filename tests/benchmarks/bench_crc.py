"""CRC32 throughput of zlib and ISA-L (the page-checksum path of the reader) on one buffer, in GB/s.

    python tests/benchmarks/bench_crc.py --mib 256 --repeats 5

Prints one JSON line per implementation (median of ``--repeats``), and whether both give the same value.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import zlib

import numpy as np
from isal import isal_zlib


def rate(fn, buf: bytes, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(buf)
        times.append(time.perf_counter() - t)
    return len(buf) / statistics.median(times) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    buf = np.random.default_rng(0).bytes(args.mib << 20)
    same = zlib.crc32(buf) == isal_zlib.crc32(buf)
    for name, fn in (("zlib", zlib.crc32), ("isal", isal_zlib.crc32)):
        print(json.dumps({"bench": "crc32", "impl": name, "gbps": round(rate(fn, buf, args.repeats), 2),
                          "same_value": same, "date": time.strftime("%Y-%m-%d")}))


if __name__ == "__main__":
    main()
