"""Time the restorer on one 4096^2 photo with different auto-tile sides, in one process (alternate them to see the
host's run-to-run noise), as `face2scene bench` runs it: prints side, UNet seconds, whole restore seconds, share of
the machine's conv rate.

    python scripts/tile_probe.py 2048,1280,2048,1280 [--size 4096]
"""
import argparse

import face2scene_core.bench as bench
import face2scene_core.large_photo as large_photo

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("sides", help="comma-separated values of large_photo.AUTO_TILE_PX to try, in order")
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args()
    for px in (int(v) for v in args.sides.split(",")):
        large_photo.AUTO_TILE_PX = px
        r = bench.run_one("embedded", args.size)
        print(f"auto tile {px}: unet {r['seconds']['unet']:.2f} s, restore {r['seconds']['restore']:.2f} s, "
              f"{r['efficiency']:.1%} of {r['machine_conv_gflops']} GFLOP/s", flush=True)
