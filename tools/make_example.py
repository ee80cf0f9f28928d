"""Rebuild the example shipped in example_inputs/ (the input of README's first command).

    .venv/bin/python tools/make_example.py

Source: scikit-image's ``astronaut.png`` (NASA photo of Eileen Collins, public domain), which the
scikit-image wheel ships. The low-quality input is that photo degraded with the Real-ESRGAN pipeline
(operator sampled with seed 7, recorded in example_inputs/astronaut_lq.json). The reference is the clean photo,
mirrored and recropped: we have only one public-domain photo of her, so the demo shows the mechanism, not
identity generalisation (use real references of your subject for real work).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from skimage import data

from face2scene_core.degradation import DegradationConfig, RealESRGANDegradation, degrade_image
from face2scene_core.imageio import save_image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    clean = data.astronaut()
    deg = RealESRGANDegradation(DegradationConfig())
    params = deg.sample(np.random.default_rng(7))
    lq = degrade_image(clean, params)
    save_image(ROOT / "example_inputs/astronaut_lq.png", lq)
    (ROOT / "example_inputs/astronaut_lq.json").write_text(json.dumps({"source": "skimage.data.astronaut()",
                                                                  "seed": 7, "params": params.to_dict()}, indent=1))
    ref = np.ascontiguousarray(clean[:, ::-1][16:496, 24:488])
    save_image(ROOT / "example_inputs/refs/astronaut_ref.png", ref)
    save_image(ROOT / "example_inputs/astronaut_gt.png", clean)


if __name__ == "__main__":
    main()
